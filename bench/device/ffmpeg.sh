#!/usr/bin/env bash
# Unpack the carried FFmpeg for the device scripts: .carry/ffbin/ffmpeg.xz (imageio-ffmpeg
# 0.6.0's FFmpeg 7.0.2, xz-compressed to fit the carry limit; the device has no xz tool, so
# Python's lzma does it) to /tmp/ffmpeg, and print its version. Source it:
#   . bench/device/ffmpeg.sh || exit 1      (then RESTYLE_FFMPEG=/tmp/ffmpeg)
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.carry/ffbin/ffmpeg.xz'), \
open('/tmp/ffmpeg', 'wb'))" && chmod +x /tmp/ffmpeg && /tmp/ffmpeg -hide_banner -version | head -1
