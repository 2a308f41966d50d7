"""`rn50 bench mlperf`: MLCommons' LoadGen (the `mlperf` extra) over any rn50 runtime.

settings.py   the scenarios, the official values (LoadGen's built-in mlperf.conf), the options that shorten
              a run (each a deviation: NOT COMPLIANT), the TestSettings a run becomes
library.py    the query sample library: a labelled folder, preprocessed on LoadGen's load call, held in memory
sut.py        the system under test: each scenario's batching, answers, stopping
system.py     the runtime it runs, the calibration, the Server batch and timeout
loadgen.py    one LoadGen test in a thread, watched from the main thread (progress, signals, clean stdout)
logs.py       LoadGen's logs read back: verdict, failed criteria, metric, percentiles; top-1 from its accuracy log
report.py     rn50's table and verdict lines
run.py        the driver: setup, one run or the Server peak search, the accuracy target

from rn50.bench.mlperf import MlperfOptions, run_mlperf
result = run_mlperf(MlperfOptions("model.onnx", "imagenet", scenario="offline"))
"""

from rn50.bench.mlperf.run import InvalidResult, run_mlperf
from rn50.bench.mlperf.settings import MODES, SCENARIOS, MlperfOptions

__all__ = ["MODES", "SCENARIOS", "InvalidResult", "MlperfOptions", "run_mlperf"]
