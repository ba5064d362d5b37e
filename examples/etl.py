"""ETL: extract a list of files, transform each of them in parallel (the file is the step's
argument), then load the results.  A transform that fails is tried again; a run that still fails
is recovered by running only the files that failed.

    extract --> transform (one iteration per file, 4 at once) --> load
                  file(path=...)

Run it, either way:

    python examples/etl.py                      # a plain script
    sequent run examples/etl.py                 # a flow file: the module's build_flow(argv)

``--fail NAME`` makes the transform of that file fail (every try), to try recovery::

    sequent run examples/etl.py -- --fail c.csv     # exit 1: c.csv failed after 2 tries
    sequent recover examples/etl.py                 # transforms c.csv only, then loads

``--workdir DIR`` says where the files go (default: ./etl-work).  Exit code 0 on success, 1 on failure.
"""
import argparse
import glob
import logging
import os
import sys

import sequent as seq

FILES = ["a.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.csv"]


def extract(workdir):
    """Write the day's input files (in a real flow: download them) into workdir/in."""
    os.makedirs(os.path.join(workdir, "in"), exist_ok=True)
    for name in FILES:
        with open(os.path.join(workdir, "in", name), "w") as out:
            out.write(f"id,value\n1,{name}\n")


def inputs(workdir):
    """The files to transform, listed when the container starts (after extract ran)."""
    return iter(sorted(glob.glob(os.path.join(workdir, "in", "*.csv"))))


def transform(path, workdir, failing=()):
    """Transform one file (the container's item) into workdir/out."""
    logger = logging.getLogger(os.getenv("SEQUENT_LOGGER_NAME"))
    name = os.path.basename(path)
    logger.info("transforming %s (try %s)", name, os.getenv("SEQUENT_STEP_TRY"))
    if name in failing:
        raise ValueError(f"{name}: malformed row 2")
    os.makedirs(os.path.join(workdir, "out"), exist_ok=True)
    with open(path) as src, open(os.path.join(workdir, "out", name), "w") as out:
        out.write(src.read().upper())


def load(workdir):
    """Load every transformed file (here: count their rows)."""
    rows = 0
    for path in sorted(glob.glob(os.path.join(workdir, "out", "*.csv"))):
        with open(path) as src:
            rows += len(src.read().splitlines()) - 1
    logging.getLogger(os.getenv("SEQUENT_LOGGER_NAME")).info("loaded %d rows", rows)


def build_flow(argv=(), **sequent_args):
    parser = argparse.ArgumentParser(prog="etl.py")
    parser.add_argument("--workdir", default=os.path.abspath("etl-work"))
    parser.add_argument("--fail", action="append", default=[], metavar="NAME",
                        help="make the transform of this file fail")
    args = parser.parse_args(list(argv))
    workdir = os.path.abspath(args.workdir)
    sequent_args.setdefault("config", {"LOGGING": {"logging_level": logging.INFO}})
    flow = seq.Sequent(**sequent_args)
    got = flow.add_step("extract", func=extract, args=(workdir,))
    each = flow.add_step("transform", repeats=lambda: inputs(workdir), requires=((got, seq.STEP_SUCCESS),),
                         config={"parallel_iterations": 4})
    each.add_step("file", func=transform, kwargs={"workdir": workdir, "failing": tuple(args.fail)},
                  config={"item_arg_name": "path", "retries": 1, "retry_delay": 0.5})
    flow.add_step("load", func=load, args=(workdir,), requires=((each, seq.STEP_SUCCESS),))
    return flow


if __name__ == "__main__":
    sys.exit(0 if build_flow(sys.argv[1:]).run() else 1)
