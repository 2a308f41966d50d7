"""A stop signal (Ctrl-C, a scheduler's SIGTERM) while the main process takes a batch from a DataLoader worker: the
worker says nothing (the main process reports the stop). Each batch's shared memory is handed over through a
handshake with the worker's resource-sharer thread; a main process that leaves mid-handshake used to make that
thread print a traceback (EOFError, BrokenPipe, ConnectionReset), about one stop in two on a loaded 2-core machine."""

import subprocess
import sys

# Interrupts an endless pytorch loader (2 workers) at many moments with a real SIGINT to its process group, each
# stop raised as `rn50 bench data` raises it; prints how many trials were stopped that way.
CHILD = """
import os, random, signal, sys, threading
from rn50.bench.stop import Interrupted, StopSignals
from rn50.data.loaders import make_loader
from rn50.data.transforms import eval_image
from rn50.recipes import get_recipe

loader = make_loader(sys.argv[1], "train", get_recipe("sample-cpu").replace(batch_size=8, image_size=32), "pytorch",
                     "cpu", workers=2)
eval_image(loader.files.files[0], 32)  # the decoders imported once, before the workers fork

def endless():
    for epoch in range(10**6):
        loader.set_epoch(epoch)
        yield from loader

rng, stopped = random.Random(0), 0
for trial in range(int(sys.argv[2])):
    with StopSignals("trial"):
        try:
            batches = endless()
            next(batches)  # the workers are up
            threading.Timer(rng.uniform(0.0, 0.3), os.killpg, (0, signal.SIGINT)).start()
            for _ in batches:
                pass
        except Interrupted:
            stopped += 1
    loader.close()
print(stopped)
"""


def test_a_stop_signal_during_a_batch_hand_over_leaves_the_workers_silent(sample_dir):
    trials = 16
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(sample_dir), str(trials)],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert done.returncode == 0 and done.stdout.split() == [str(trials)], done.stdout + done.stderr
    assert done.stderr == ""
