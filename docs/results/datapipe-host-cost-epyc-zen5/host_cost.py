"""Training-thread CPU time per image of one rn50 train loader (time.thread_time across next(), the measure
`rn50 bench data` reports as host us/img), for code that predates that column too: only make_loader is used.

    PYTHONPATH=<checkout> python host_cost.py DATA BACKEND BATCH ITERS     # prints one JSON line
"""

import json
import statistics
import sys
import time

from rn50.data.loaders import make_loader
from rn50.recipes import get_recipe

root, backend, batch, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
recipe = get_recipe("dgxa100-fp16-90").replace(batch_size=batch, gpus=1, image_size=224, workers=2)
loader = make_loader(root, "train", recipe, backend, "cpu", workers=2)


def batches():
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


stream = batches()
for _ in range(2):  # start-up
    next(stream)
per_batch, images = [], 0
start = time.perf_counter()
for _ in range(iters):
    cpu = time.thread_time()
    _, labels = next(stream)
    per_batch.append(time.thread_time() - cpu)
    images += len(labels)
wall = time.perf_counter() - start
print(
    json.dumps(
        {
            "backend": backend,
            "batch": batch,
            "images": images,
            "img_per_s": images / wall,
            "host_us_per_image": 1e6 * sum(per_batch) / images,
            "median_batch_ms": 1e3 * statistics.median(per_batch),
            "rn50": sys.modules["rn50"].__file__,
        }
    )
)
