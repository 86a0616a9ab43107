"""The video path, one file per step a frame takes:

    opening.py        a file, URL or webcam -> a VideoSource (which decoder reads what; what is wrong when none can)
    decode_pyav.py    the decoders, one VideoSource each, yielding only the frames the time grid keeps;
    decode_decord.py  decode.py holds what they share (URLs, the network timeout, refused demuxers, headers)
    decode_opencv.py
    sample.py         sampling at --fps, resizing, pacing (`realtime`), the lag behind live, chunking
    skip.py           the frame skip: frames that barely differ from the last one fed never reach the model
    frame.py          the types they pass along: Frame, Chunk, TimeGrid, VideoSource, PushSource, the clocks

`streamer.frames` is the public face: programs and the UI import from there.
"""
