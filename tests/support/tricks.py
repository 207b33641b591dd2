"""Dishonest submissions of the tiny lab (:mod:`tinylab`), shared by
the sandbox's and the container's red-team tests.

Each trick is a dict of exercise-cell sources (``cell_2``: ``agp_sparsity``, 2 points;
``cell_4``: ``get_num_channels_to_keep``, 1 point) built so that it earns a check only if
the grader failed: the underlying answers are wrong, or the abuse sits before the
correct answer and stops it when the limit holds.
"""

import textwrap

from labkit.grading import checks
from labkit.pruning import schedule

WRONG_AGP = ("def agp_sparsity(t, n, s_initial, s_final):\n"
             "    return s_initial + (s_final - s_initial) * t / n\n")
WRONG_KEEP = "def get_num_channels_to_keep(channels, prune_ratio):\n    return channels\n"
CALL = "def agp_sparsity(*args):\n    return {reference}(*args)\n"


def _public_answers() -> dict:
    return {tuple(case.args): schedule.agp_sparsity(*case.args)
            for case in checks.CHECKS["check_agp_sparsity"].cases()}


def _module(qualified: str) -> tuple[str, str]:
    """``labkit.a.b.f`` as the source of an obfuscated import of ``labkit.a.b``, and
    the function's name split in two (so no name of the reference appears whole)."""
    module, _, function = qualified.rpartition(".")
    half = len(function) // 2
    return (f"importlib.import_module({module[:8]!r} + {module[8:]!r})",
            f"{function[:half]!r} + {function[half:]!r}")


def runtime_call(qualified: str, name: str) -> str:
    """``name`` calls the reference ``qualified``, reached at run time by strings."""
    module, function = _module(qualified)
    return (f"import importlib\nMODULE = {module}\n"
            f"def {name}(*args):\n    return getattr(MODULE, {function})(*args)\n")


def thread_call(qualified: str, name: str) -> str:
    """``name`` calls the reference from a worker thread, with the recorder's state
    switched off around the call, so that no exercise frame is on that stack."""
    module, function = _module(qualified)
    return textwrap.dedent(f"""\
        import importlib, threading
        core = importlib.import_module("labkit.grading.checks." + "core")
        MODULE = {module}

        def {name}(*args):
            box = []

            def call():
                recording, core.recording = core.recording, None
                try:
                    box.append(getattr(MODULE, {function})(*args))
                finally:
                    core.recording = recording

            worker = threading.Thread(target=call)
            worker.start()
            worker.join()
            return box[0] if box else 0.0
        """)


def links(planted: str) -> str:
    """Replace the kernel tripwire's log and the junit report by links to ``planted``."""
    return textwrap.dedent(f"""\
        import os
        for path in (os.path.join(os.environ["LABKIT_GRADING_DIR"], "tripwire.jsonl"),
                     os.path.join(os.getcwd(), os.pardir, "report", "junit.xml")):
            try:
                os.symlink({planted!r}, path)
            except OSError:
                pass
        """)


def patched_record(qualified: str) -> str:
    """Replace the recorder by one that saves the reference's outcomes."""
    module, function = _module(qualified)
    return textwrap.dedent(f"""\
        import importlib, torch
        core = importlib.import_module("labkit.grading.checks." + "core")
        REFERENCE = getattr({module}, {function})

        def fake_record(check, function, folder, seed):
            cases = core.all_cases(check, seed)
            outcomes = [core.plain(REFERENCE(*case.args)) for case in cases]
            torch.save({{"check": check.name, "cases": [case.name for case in cases],
                        "outcomes": outcomes, "labkit_function": ""}},
                       folder / f"{{check.name}}.pt")
            print(f"{{check.name}}: results recorded")

        core.record = fake_record
        """)


def referee_bomb(check: str) -> str:
    """A thread that replaces the recorded outcomes of ``check`` (its name, as in
    ``<name>.pt``) by a few bytes whose representation grows exponentially."""
    return textwrap.dedent(f"""\
        import os, threading, time, torch

        def _swap():
            path = os.path.join(os.environ.get("LABKIT_GRADING_DIR", "/nowhere"),
                                "{check}.pt")
            end = time.time() + 60
            while not os.path.exists(path) and time.time() < end:
                time.sleep(0.02)
            time.sleep(0.2)
            nested = [0.0]
            for _ in range(60):
                nested = [nested, nested]
            recorded = torch.load(path)
            torch.save({{**recorded, "outcomes": [nested] * len(recorded["cases"])}}, path)

        threading.Thread(target=_swap).start()
        """)


AGP_REFERENCE = "labkit.pruning.schedule.agp_sparsity"


def reference_tricks(planted: str) -> dict[str, dict[str, str]]:
    """Per student, wrong answers reaching the reference, the expected values or the
    grader's files some other way; ``planted`` is a host file none may leak."""
    static = ("from labkit.pruning.schedule import agp_sparsity as reference\n"
              + CALL.format(reference="reference"))
    hooks = ("def rewrite(lines):\n    return [line.replace('check_agp_sparsity(agp_sparsity)', "
             "'check_agp_sparsity(__import__(\"labkit.pruning.schedule\").pruning.schedule"
             ".agp_sparsity)') for line in lines]\n"
             "get_ipython().input_transformers_cleanup.append(rewrite)\n"
             "get_ipython().set_custom_exc((Exception,), lambda *args, **kwargs: None)\n"
             + WRONG_AGP)
    frames = ("import sys\ndef agp_sparsity(*args):\n    frame = sys._getframe(1)\n"
              "    while frame is not None:\n        for value in frame.f_locals.values():\n"
              "            if isinstance(value, float):\n                return value\n"
              "        frame = frame.f_back\n    return 0.0\n")
    agp = {
        "wrong": WRONG_AGP,
        "reference_static": static,
        "reference_runtime": runtime_call(AGP_REFERENCE, "agp_sparsity"),
        "alias": ("import importlib\n"
                  "DECLARED = importlib.import_module('labkit.grading.checks.' + 'schedule')\n"
                  "REFERENCE = getattr(DECLARED, 'AGP_' + 'SPARSITY').reference\n"
                  + CALL.format(reference="REFERENCE")),
        "magic": "%time _ = 1\n" + static,
        "thread": thread_call(AGP_REFERENCE, "agp_sparsity"),
        "links": links(planted) + runtime_call(AGP_REFERENCE, "agp_sparsity"),
        "referee_bomb": referee_bomb("agp_sparsity") + WRONG_AGP,
        "patched_record": patched_record(AGP_REFERENCE) + WRONG_AGP,
        "patched_check": ("from labkit.grading import checks as c\n"
                          "c.check_agp_sparsity = lambda f: print('agp_sparsity: results "
                          "recorded')\n" + WRONG_AGP),
        "ipython_hooks": hooks,
        "frames": frames,
        "hard_coded": (f"ANSWERS = {_public_answers()!r}\n"
                       "def agp_sparsity(*args):\n    return ANSWERS.get(args, 0.0)\n"),
    }
    return {student: {"cell_2": source, "cell_4": WRONG_KEEP} for student, source in agp.items()}


def resource_tricks(solved: dict[str, str]) -> dict[str, dict[str, str]]:
    """Per student, exercise cells that abuse a resource before the correct answer;
    each earns the check of that cell only if the limit failed to hold."""
    fill = ("import os\nfor number in range(12):\n"
            "    with open(os.path.join(os.getcwd(), f'fill{number}'), 'wb') as f:\n"
            "        f.write(bytes(24 * 2**20))\n" + solved["cell_2"])
    shm = fill.replace("os.path.join(os.getcwd(), f'fill{number}')", "f'/dev/shm/fill{number}'")
    bomb = ("import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(600)\n"
            + solved["cell_4"])
    folders = ("import os\nfor number in range(20000):\n"
               "    os.mkdir(os.path.join(os.getcwd(), f'd{number}'))\n" + solved["cell_2"])
    pool = textwrap.dedent("""\
        import multiprocessing, time

        def hold(_):
            data = b"x" * (600 * 2**20)
            time.sleep(6)
            return len(data)

        with multiprocessing.get_context("fork").Pool(4) as workers:
            HELD = sum(workers.map(hold, range(4)))
        """) + solved["cell_4"]
    hog = textwrap.dedent("""\
        import os, time
        from multiprocessing import get_context

        def spin():
            os.sched_setaffinity(0, range(os.cpu_count()))
            end = time.time() + 10
            while time.time() < end:
                pass

        BEFORE = os.sched_getaffinity(0)
        SPINNERS = [get_context("fork").Process(target=spin, daemon=True) for _ in range(3)]
        for spinner in SPINNERS:
            spinner.start()
        os.sched_setaffinity(0, range(os.cpu_count()))
        time.sleep(2)
        ESCAPED = os.sched_getaffinity(0) != BEFORE
        """) + solved["cell_2"] + "\nif not ESCAPED:\n" + textwrap.indent(WRONG_AGP, "    ")
    return {"filler": {"cell_2": fill}, "shm": {"cell_2": shm}, "bomber": {"cell_4": bomb},
            "folders": {"cell_2": folders}, "pool": {"cell_4": pool}, "hog": {"cell_2": hog}}
