"""Video I/O on PyAV: probe, frame-sampled decoding that seeks, H.264 encoding, images.

Decoding first demuxes the video stream's packets (cheap: no pixel is decoded) to learn every
frame's timestamp and the keyframes, picks the frames the sampling asks for, then decodes only
the groups of pictures that hold them, seeking over the rest. Frame times come from the
timestamps, so variable-frame-rate files sample correctly; display rotation is applied.

Every failure a file can cause (missing, empty, truncated, corrupt, audio-only, an image or any
other non-video) raises one `VideoError` naming the file and the cause.
"""

from mugv.data._errors import VideoError
from mugv.data.video._decode import Fit, read_video, resize_frames, sample_clip
from mugv.data.video._encode import PixFmt, encode_video, write_video
from mugv.data.video._image import decode_image, encode_image, read_image, write_image
from mugv.data.video._open import VideoInfo, probe

__all__ = [
    "Fit",
    "PixFmt",
    "VideoError",
    "VideoInfo",
    "decode_image",
    "encode_image",
    "encode_video",
    "probe",
    "read_image",
    "read_video",
    "resize_frames",
    "sample_clip",
    "write_image",
    "write_video",
]
