"""Photos: the POS camera (synthetic, webcam, file) and classical OpenCV photo verification.

OpenCV reads `OPENCV_IO_MAX_IMAGE_PIXELS` only when it is first imported, so a default is set here,
before any submodule imports cv2. It is a second line of defence: `decode` checks sizes itself.
"""

import os

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64 * 1024 * 1024))
