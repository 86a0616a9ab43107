"""The synthetic world: coloured shapes carrying digits on a plain scene, made for training `tiny`,
for tests, benchmarks and the demo. Data beside the product, not part of the streaming core
(installed as `streamer.world`)."""
