"""Face detection speed: photos/s of the built-in MTCNN on one 640x480 photo, at 1 and 2 torch threads.

    PYTHONPATH=src python benchmarks/detect_speed.py [--photo PATH] [--repeat 10] [--detector mtcnn|FILE.onnx]

The photo is the shared group photo (six faces, ../shared/data/photos/group_six_faces.jpg) cut to 4:3 about
its centre and resized (area) to 640x480; without ../shared, give --photo (any photo is cut and resized the
same way). Each figure is the median of --repeat timed runs after two warm-up runs; the stage split is one
extra run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cdface.data.decode import decode_image
from cdface.detect import create_detector

SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "group_six_faces.jpg"


def photo_640x480(path: Path) -> np.ndarray:
    import cv2

    image = decode_image(path.read_bytes(), source=path)
    h, w = image.shape[:2]
    if w * 3 > h * 4:  # wider than 4:3: cut the sides
        cut = (w - h * 4 // 3) // 2
        image = image[:, cut:w - cut]
    else:
        cut = (h - w * 3 // 4) // 2
        image = image[cut:h - cut]
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=SHARED_PHOTO)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--detector", default="mtcnn")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    args = parser.parse_args()
    if not args.photo.is_file():
        raise SystemExit(f"no photo at {args.photo}: give --photo PATH")
    image = photo_640x480(args.photo)
    detector = create_detector(args.detector)
    print(f"photo: {args.photo.name} as 640x480; detector: {detector.name}; "
          f"faces found: {len(detector.detect(image))}")
    print("| threads | ms/photo (median) | photos/s |")
    print("|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for _ in range(2):
            detector.detect(image)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            detector.detect(image)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"| {threads} | {median * 1000:.1f} | {1 / median:.2f} |")


if __name__ == "__main__":
    main()
