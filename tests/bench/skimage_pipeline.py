#!/usr/bin/python3
"""The scikit-image nuclei pipeline a pathologist-programmer would write:
rgb2hed -> Otsu -> distance-transform watershed -> regionprops.

Baseline of the tumorfeatures benchmark (tests/bench/bench_analysis.cpp),
run with Debian's /usr/bin/python3 and python3-skimage:

  skimage_pipeline.py time  REPEATS FRAME.png...   -> per-repeat fps (JSON)
  skimage_pipeline.py detect UM_PER_PX IMAGE.png [MASK.png]   -> centroids (JSON), foreground mask
  skimage_pipeline.py labels UM_PER_PX IMAGE.png LABELS.png    -> centroids (JSON), 16-bit instance labels

Only the analysis is timed, not reading the PNGs (done before the clock).
"""
import json
import sys
import time

import numpy as np
from scipy import ndimage as ndi
from skimage import io
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed


def analyse(rgb, um_per_px):
    h = rgb2hed(rgb[..., :3])[..., 0]
    mask = h > threshold_otsu(h)
    min_px = max(1, int(round(6.0 / um_per_px ** 2)))  # 6 um^2, as tumorfeatures
    mask = remove_small_objects(mask, min_px)
    dist = ndi.distance_transform_edt(mask)
    min_distance = max(1, int(round(1.6 / um_per_px)))
    coords = peak_local_max(dist, min_distance=min_distance, labels=label(mask))
    markers = np.zeros(dist.shape, dtype=np.int32)
    markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
    labels = watershed(-dist, markers, mask=mask)
    props = regionprops(labels, intensity_image=h)
    nuclei = [(p.centroid[1] + 0.5, p.centroid[0] + 0.5, p.area, p.perimeter,
               p.eccentricity, p.solidity, p.mean_intensity) for p in props]
    return labels, nuclei


def main():
    mode = sys.argv[1]
    if mode == "time":
        repeats = int(sys.argv[2])
        um_per_px = float(sys.argv[3])
        frames = [io.imread(p)[..., :3] for p in sys.argv[4:]]
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for f in frames:
                analyse(f, um_per_px)
            runs.append(len(frames) / (time.perf_counter() - t0))
        print(json.dumps({"runs_fps": runs}))
    elif mode == "detect":
        um_per_px = float(sys.argv[2])
        rgb = io.imread(sys.argv[3])[..., :3]
        labels, nuclei = analyse(rgb, um_per_px)
        out = {"centroids": [[n[0], n[1]] for n in nuclei],
               "foreground_px": int((labels > 0).sum())}
        if len(sys.argv) > 4:  # write the foreground mask for Dice
            io.imsave(sys.argv[4], ((labels > 0) * 255).astype(np.uint8), check_contrast=False)
        print(json.dumps(out))
    elif mode == "labels":
        um_per_px = float(sys.argv[2])
        rgb = io.imread(sys.argv[3])[..., :3]
        labels, nuclei = analyse(rgb, um_per_px)
        io.imsave(sys.argv[4], labels.astype(np.uint16), check_contrast=False)
        print(json.dumps({"centroids": [[n[0], n[1]] for n in nuclei]}))
    else:
        sys.exit("usage: skimage_pipeline.py time REPEATS UM_PER_PX FRAME... | detect UM_PER_PX IMAGE [MASK.png] | labels UM_PER_PX IMAGE LABELS.png")


if __name__ == "__main__":
    main()
