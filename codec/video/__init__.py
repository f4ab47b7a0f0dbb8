"""INR video codec: frames <-> fitted network (HNeRV-style) <-> entropy streams <-> .ncf.

io         the one frame reader (PyAV; files, PNG folders, arrays) and the writer
codec      encode_video, decode_video, iter_decode_video, parse (the file's checks), render
fit        fitting one group of frames (QAT) and quantizing it
rate       rate control: step sizes chosen with the coder so the file lands on the target
arch       the network's size for a target rate, and its "arch" section
bitstream  integer tensors and group payloads as bytes
resume     the encoder's resume store
"""
from codec.video.codec import decode_video, encode_video, iter_decode_video, video_fps_of, video_info
from codec.video.io import is_video, iter_frames, read_frames, video_fps, write_frames

__all__ = ["encode_video", "decode_video", "iter_decode_video", "video_fps_of", "video_info",
           "is_video", "iter_frames", "read_frames", "video_fps", "write_frames"]
