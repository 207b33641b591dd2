"""How a check is declared once and run in two modes.

A *check* is data: the public cases a student sees, a generator of hidden cases from a
seed, labkit's reference implementation, how a result is observed and how two
observations are compared. The same declaration runs

- in **practice mode** (a student's own kernel): every public case is run through the
  student's function and through the reference; the first difference is reported with
  what differs (:class:`CheckFailed`, rendered as its message alone), and one line
  ``<name>: <n>/<n> cases passed`` is printed on success. An unfinished exercise
  (``NotImplementedError``) prints ``<name>: not done yet`` and does not stop the run;
- in **grading mode** (inside the grader's sandbox, the environment variable
  ``LABKIT_GRADING_DIR`` names the results folder and ``LABKIT_GRADING_SEED`` the run's
  seed): the student's function runs on the public and the hidden cases, its outcomes
  are written as plain data to ``<dir>/<name>.pt`` and the cell prints
  ``<name>: results recorded``. Nothing is decided in the kernel and no expected value
  is computed there: :mod:`labkit.grading.referee` compares the outcomes with the
  reference outside the sandbox.

An *outcome* is the observation, or :class:`Raised` when the function raised an error
the case may expect (``ValueError``/``TypeError`` for a bad argument), or
:class:`Unfinished`, or :class:`Crashed` for any other exception. Outcomes are reduced
to plain data (:func:`plain`) in both modes, so practice and grading compare the same
thing, and the grader reads them back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import reprlib
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

GRADING_DIR = "LABKIT_GRADING_DIR"
GRADING_SEED = "LABKIT_GRADING_SEED"
GRADING_CASES = "LABKIT_GRADING_CASES"
RECORDED = "results recorded"


class CheckFailed(AssertionError):
    """A student's answer differs from the reference; the message says where.

    IPython shows only the message (``_render_traceback_``): the traceback through the
    check's own code would hide the one line that matters.
    """

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


class CheckError(RuntimeError):
    """The check itself (or labkit's reference) failed: not the student's mistake."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


@dataclass(frozen=True)
class Raised:
    """The function raised ``error`` (its class name); the message is not compared."""

    error: str
    message: str = ""


@dataclass(frozen=True)
class Unfinished:
    """The function raised ``NotImplementedError``: the exercise is not done yet."""


@dataclass(frozen=True)
class Crashed:
    """The function raised an error no case expects; ``where`` is the student's frames."""

    error: str
    where: str = ""


NOT_GIVEN = object()


@dataclass(frozen=True)
class Case:
    """One call of the student's function: a name, the arguments and, where the
    reference does not give it, the ``expected`` observation."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expected: Any = NOT_GIVEN


def call(function: Callable, case: Case) -> Any:
    """The default observation: the function's return value on the case's arguments."""
    return function(*case.args, **case.kwargs)


Compare = Callable[[Any, Any], str | None]
"""``compare(expected, actual)``: ``None`` when the two plain outcomes agree, else what
differs, in words."""


@dataclass(frozen=True)
class Check:
    """A check, declared once.

    - ``name``: what the cell prints and the grade table shows;
    - ``reference``: labkit's implementation, called like the student's function;
    - ``cases``: the public cases (a function, so they are built only when needed);
    - ``hidden``: the hidden cases drawn from a seed (the grader's secret per run);
    - ``observe(function, case)``: what is compared (default: the return value);
    - ``compare(expected, actual)``: ``None`` when they agree, else what differs
      (:func:`close`: floats within a tolerance scaled to their dtype, everything else
      exactly; :func:`exact`: floats exactly too); default :func:`close`;
    - ``errors``: the error classes a case may expect (the reference raising one of
      them on a case makes that error the expected outcome; default none);
    - ``pure``: the function must leave its tensor arguments unchanged;
    - ``replaces``: the labkit functions the exercise asks the student to write
      (qualified names); calling them from the exercise earns nothing;
    - ``conventions``: phrases the exercise text must state, one per convention that
      a case enforces (dtype, rounding, ties, not changing the input).
    """

    name: str
    reference: Callable
    cases: Callable[[], Sequence[Case]]
    hidden: Callable[[int], Sequence[Case]]
    observe: Callable[[Callable, Case], Any] = call
    compare: Compare = None  # type: ignore[assignment]
    errors: tuple[type[Exception], ...] = ()
    pure: bool = True
    replaces: tuple[str, ...] = ()
    conventions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.compare is None:
            object.__setattr__(self, "compare", close())


# --- outcomes as plain data -----------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` reduced to what ``torch.load(weights_only=True)`` reads back: plain
    tensors, numbers, strings, ``None`` and lists, tuples and str-keyed dicts of them.
    A number Python accepts as one (a NumPy scalar, a ``numbers.Real``) becomes a plain
    ``int`` or ``float``; anything else becomes a dict saying what it was."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).clone().cpu()
    if type(value) in (list, tuple):
        return type(value)(plain(item) for item in value)
    if type(value) is dict and all(type(key) is str for key in value):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (Raised, Crashed)):
        return {"outcome": type(value).__name__, "error": value.error,
                "text": getattr(value, "message", getattr(value, "where", ""))}
    if isinstance(value, Unfinished):
        return {"outcome": "Unfinished"}
    number = _plain_number(value)
    if number is not None:
        return number
    return {"outcome": "unsupported", "type": type(value).__name__,
            "text": _short_repr(value)}


def _plain_number(value: Any) -> bool | int | float | None:
    """A NumPy scalar or a ``numbers.Real`` as a plain bool, int or float; else None."""
    numpy = sys.modules.get("numpy")  # a NumPy scalar exists only once NumPy is imported
    try:
        if numpy is not None and isinstance(value, numpy.generic):
            item = value.item()
            return item if type(item) in (bool, int, float) else None
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
    except (TypeError, ValueError, OverflowError):  # a number-like object that is none
        return None
    return None


def _bounded_repr() -> reprlib.Repr:
    """Representations of bounded size: a value built so that its full ``repr`` explodes
    (lists nested in themselves) is shown to depth 3, 8 items a level."""
    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxstring, bounded.maxother = 3, 160, 160
    bounded.maxlist = bounded.maxtuple = bounded.maxdict = bounded.maxset = 8
    return bounded


_BOUNDED = _bounded_repr()


def _short_repr(value: Any) -> str:
    try:
        text = _BOUNDED.repr(value)
    except Exception as error:  # a student object whose repr itself fails
        text = f"<repr raised {type(error).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def outcome_kind(value: Any) -> str:
    """``"value"``, or the kind of a non-value outcome in plain form."""
    if type(value) is dict and value.get("outcome") in ("Raised", "Crashed", "Unfinished",
                                                          "unsupported"):
        return value["outcome"]
    return "value"


def describe_outcome(value: Any) -> str:
    """A non-value outcome in words."""
    kind = outcome_kind(value)
    if kind == "Raised":
        return f"{value['error']} raised" + (f" ({value['text']})" if value["text"] else "")
    if kind == "Crashed":
        return f"raised {value['error']}" + (f"\n{value['text']}" if value["text"] else "")
    if kind == "Unfinished":
        return "not implemented yet"
    if kind == "unsupported":
        return f"a {value['type']}: {value['text']}"
    return show(value)


# --- comparing observations -----------------------------------------------------------

FLOAT_RTOL = 1e-6
"""Python floats agree within this, relatively (and absolutely near zero): about eight
float32 ulps, so a number computed in float32 arithmetic agrees with a float64 reference."""

ULPS = 64
"""Float tensors agree within this many machine epsilons of their dtype (64 x 1.2e-7 for
float32, 64 x 2.2e-16 for float64), relative to each element plus the tensor's largest
magnitude: another order of the same sums and products agrees, a wrong formula does not."""


@dataclass(frozen=True)
class Tolerance:
    """How far floats may differ: ``floats`` for Python floats (relative and absolute),
    ``ulps`` machine epsilons of their dtype for float tensors."""

    floats: float = FLOAT_RTOL
    ulps: float = ULPS

    def tensor_bound(self, expected: torch.Tensor) -> torch.Tensor:
        """The largest difference allowed at each element of ``expected``."""
        rtol = self.ulps * torch.finfo(expected.dtype).eps
        magnitude = expected.double().abs()
        finite = magnitude[magnitude.isfinite()]
        scale = float(finite.max()) if finite.numel() else 0.0
        return torch.where(magnitude.isfinite(), rtol * (magnitude + scale), 0.0)


EXACT = Tolerance(floats=0.0, ulps=0)


def show(value: Any) -> str:
    """A value in a failure message: tensors by shape and dtype, with values if small."""
    if isinstance(value, torch.Tensor):
        head = f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
        return f"{head}: {value.tolist()}" if value.numel() <= 16 else head
    return _short_repr(value)


def _index(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    position = []
    for size in reversed(shape):
        position.append(flat % size)
        flat //= size
    return tuple(reversed(position))


def compare_tensors(expected: torch.Tensor, actual: Any,
                    tolerance: Tolerance = EXACT) -> str | None:
    """What differs between two tensors: type, shape, dtype, then the values (how many
    elements differ, the first differing index with both values; for bool masks the
    kept counts). Float values agree within ``tolerance``, others exactly."""
    if not isinstance(actual, torch.Tensor):
        return f"expected a torch.Tensor, got {describe_outcome(actual)}"
    if actual.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got shape {tuple(actual.shape)}"
    if actual.dtype != expected.dtype:
        return f"expected dtype {expected.dtype}, got dtype {actual.dtype}"
    if expected.is_floating_point():
        a, e = actual.double(), expected.double()
        agree = ((a - e).abs() <= tolerance.tensor_bound(expected)) | (a == e)
        differ = ~(agree | (a.isnan() & e.isnan()))
    else:
        differ = actual != expected
    count = int(differ.sum())
    if count == 0:
        return None
    first = int(differ.flatten().nonzero()[0])
    where = _index(first, expected.shape)
    message = (f"{count} of {expected.numel()} elements differ; the first at index "
               f"{where}: expected {expected.flatten()[first].item()!r}, "
               f"got {actual.flatten()[first].item()!r}")
    if expected.dtype == torch.bool:
        message += (f"; kept (True) elements: expected {int(expected.sum())}, "
                    f"got {int(actual.sum())}")
    return message


def close(tolerance: float | None = None, *, ulps: float = ULPS) -> Compare:
    """Compare numbers by their kind: Python floats within ``tolerance`` (default
    :data:`FLOAT_RTOL`, relative and absolute), float tensors within ``ulps`` machine
    epsilons of their dtype (:class:`Tolerance`); ints, bools, strings, integer and bool
    tensors exactly. A number may come as an int (where a float is expected), a NumPy
    scalar or a 0-d tensor."""
    rule = Tolerance(FLOAT_RTOL if tolerance is None else tolerance, ulps)
    return lambda expected, actual: _compare(expected, actual, rule)


def exact(expected: Any, actual: Any) -> str | None:
    """Compare exactly: same types, same shapes and dtypes, same values (floats too)."""
    return _compare(expected, actual, EXACT)


def _as_number(expected: int | float, actual: Any) -> tuple[Any, str | None]:
    """``actual`` as a Python number of ``expected``'s kind (an int is a float too; a 0-d
    tensor is read as its number), or what is wrong with it."""
    wanted = "an int" if type(expected) is int else "a number"
    if isinstance(actual, torch.Tensor) and actual.dim() == 0 and \
            actual.dtype not in (torch.bool, torch.complex64, torch.complex128):
        if type(expected) is int and actual.is_floating_point():
            return None, f"expected {wanted}, got a {actual.dtype} tensor {actual.item()!r}"
        return actual.item(), None
    allowed = (int,) if type(expected) is int else (int, float)
    if type(actual) in allowed:
        return actual, None
    if outcome_kind(actual) != "value":
        return None, f"expected {wanted}, got {describe_outcome(actual)}"
    return None, f"expected {wanted}, got a {type(actual).__name__} {show(actual)}"


def _compare_numbers(expected: int | float, actual: Any, tolerance: Tolerance) -> str | None:
    number, problem = _as_number(expected, actual)
    if problem:
        return problem
    if number == expected or (type(expected) is float and (
            math.isclose(number, expected, rel_tol=tolerance.floats,
                         abs_tol=tolerance.floats)
            or (math.isnan(number) and math.isnan(expected)))):
        return None
    return f"expected {expected!r}, got {number!r}"


def _compare_sequences(expected: list | tuple, actual: Any, tolerance: Tolerance) -> str | None:
    if type(actual) is not type(expected):
        return f"expected a {type(expected).__name__}, got {describe_outcome(actual)}"
    if len(actual) != len(expected):
        return f"expected {len(expected)} items, got {len(actual)}"
    for position, (e, a) in enumerate(zip(expected, actual, strict=True)):
        problem = _compare(e, a, tolerance)
        if problem:
            return f"item {position}: {problem}"
    return None


def _compare_dicts(expected: dict, actual: Any, tolerance: Tolerance) -> str | None:
    if type(actual) is not dict:
        return f"expected a dict, got {describe_outcome(actual)}"
    if sorted(actual) != sorted(expected):
        return f"expected keys {sorted(expected)}, got keys {sorted(actual)}"
    for key in expected:
        problem = _compare(expected[key], actual[key], tolerance)
        if problem:
            return f"{key}: {problem}"
    return None


def _compare(expected: Any, actual: Any, tolerance: Tolerance) -> str | None:
    kinds = outcome_kind(expected), outcome_kind(actual)
    if kinds != ("value", "value"):
        if kinds == ("Raised", "Raised") and expected["error"] == actual["error"]:
            return None
        return f"expected {describe_outcome(expected)}, got {describe_outcome(actual)}"
    if isinstance(expected, torch.Tensor):
        return compare_tensors(expected, actual, tolerance)
    if type(expected) in (int, float):
        return _compare_numbers(expected, actual, tolerance)
    if type(expected) in (list, tuple):
        return _compare_sequences(expected, actual, tolerance)
    if type(expected) is dict:
        return _compare_dicts(expected, actual, tolerance)
    if type(actual) is type(expected) and actual == expected:
        return None
    return f"expected {show(expected)}, got {describe_outcome(actual)}"


# --- running a function on a case -----------------------------------------------------


def _notebook_frames(error: BaseException) -> str:
    """The traceback entries of ``error`` that lie in notebook cells (the student's code),
    not in labkit or the libraries."""
    cells = Path(tempfile.gettempdir()).as_posix() + "/ipykernel_"
    entries = [entry for entry in traceback.extract_tb(error.__traceback__)
               if entry.filename.startswith(cells) or entry.filename.startswith("<ipython")]
    return "".join(traceback.format_list(entries)).rstrip()


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def outcome(check: Check, function: Callable, case: Case) -> Any:
    """The plain outcome of ``check.observe(function, case)``."""
    arguments = _tensors((case.args, case.kwargs)) if check.pure else []
    before = [t.detach().clone() for t in arguments]
    try:
        observed = check.observe(function, case)
    except NotImplementedError:
        return plain(Unfinished())
    except check.errors as error:
        return plain(Raised(type(error).__name__, str(error)[:200]))
    except Exception as error:
        return plain(Crashed(f"{type(error).__name__}: {str(error)[:300]}",
                             _notebook_frames(error)))
    for position, (tensor, copy) in enumerate(zip(arguments, before, strict=True)):
        if not torch.equal(tensor.detach(), copy) and not (
                tensor.is_floating_point() and torch.equal(tensor.isnan(), copy.isnan())
                and torch.equal(tensor.nan_to_num(), copy.nan_to_num())):
            return plain(Crashed(f"changed its tensor argument {position} in place; "
                                 "work on a copy and return a new tensor"))
    return plain(observed)


def expected_outcome(check: Check, case: Case) -> Any:
    """The reference's outcome on ``case`` (or the case's own ``expected``).

    Raises :class:`CheckError` when the reference fails in a way no case expects: a
    fault in labkit or in the check, which the student must not be blamed for.
    """
    if case.expected is not NOT_GIVEN:
        return plain(case.expected)
    result = outcome(check, check.reference, case)
    if outcome_kind(result) in ("Crashed", "Unfinished", "unsupported"):
        raise CheckError(f"{check.name}: labkit's reference failed on case {case.name!r} "
                         f"({describe_outcome(result)}). This is a fault in the check, "
                         "not in your code; please report it.")
    return result


# --- the two modes --------------------------------------------------------------------


def grading_dir() -> Path | None:
    """The results folder in grading mode, else None."""
    value = os.environ.get(GRADING_DIR)
    return Path(value) if value else None


def all_cases(check: Check, seed: int) -> list[Case]:
    """The public cases followed by the hidden ones of ``seed``."""
    hidden = [Case(f"hidden case {number}: {case.name}", case.args, case.kwargs,
                   case.expected) for number, case in enumerate(check.hidden(seed), start=1)]
    return [*check.cases(), *hidden]


def run(check: Check, function: Any) -> None:
    """Run ``check`` on the student's ``function`` in the mode the environment says."""
    if not callable(function):
        raise CheckFailed(f"{check.name}: expected a function, got "
                          f"{type(function).__name__} {_short_repr(function)}")
    folder = grading_dir()
    if folder is not None:
        record(check, function, folder, int(os.environ.get(GRADING_SEED, "0")))
    else:
        practice(check, function)


recording: str | None = None
"""The check whose cases run now in grading mode (the tripwire reads it)."""


def grading_cases(check: Check, seed: int) -> list[Case]:
    """The cases of ``check`` in grading mode: built here, or, where building them needs
    a labkit function that does not exist here (the check process stubs the references
    the lab's exercises replace), the ones the grader built outside and saved in the
    pickle that ``LABKIT_GRADING_CASES`` names."""
    try:
        return all_cases(check, seed)
    except Exception:
        path = os.environ.get(GRADING_CASES)
        if not path:
            raise
        import pickle

        with open(path, "rb") as file:
            given = pickle.load(file).get(check.name)
        if given is None:
            raise
        return given


def record(check: Check, function: Callable, folder: Path, seed: int) -> None:
    """Grading mode: write the student's outcomes on every case; decide nothing.

    The record also names the function's module when it is labkit's own (a check cell
    rewritten to check the reference itself).
    """
    global recording
    cases = grading_cases(check, seed)
    recording = check.name
    try:
        outcomes = [outcome(check, function, case) for case in cases]
    finally:
        recording = None
    module = str(getattr(function, "__module__", "") or "")
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{check.name}.pt.tmp"
    torch.save({"check": check.name, "cases": [case.name for case in cases],
                "outcomes": outcomes,
                "labkit_function": module if module.startswith("labkit") else ""}, temporary)
    os.replace(temporary, folder / f"{check.name}.pt")
    print(f"{check.name}: {RECORDED}")


def practice(check: Check, function: Callable) -> None:
    """Practice mode: compare with the reference now; one line, or what is wrong."""
    cases = list(check.cases())
    failures = []
    for case in cases:
        expected = expected_outcome(check, case)
        actual = outcome(check, function, case)
        if outcome_kind(actual) == "Unfinished":
            print(f"{check.name}: not done yet (finish the exercise above, then run this "
                  "cell again)")
            return
        problem = check.compare(expected, actual)
        if problem:
            failures.append((case, problem))
    if failures:
        case, problem = failures[0]
        others = f" ({len(failures) - 1} more of {len(cases)} cases failed too)" \
            if len(failures) > 1 else ""
        raise CheckFailed(f"{check.name}: case {case.name!r} failed: {problem}{others}")
    print(f"{check.name}: {len(cases)}/{len(cases)} cases passed")


@contextlib.contextmanager
def needs(*functions: Callable) -> Iterator[None]:
    """Run a demonstration that uses the student's ``functions``; if one of them is not
    finished yet (``NotImplementedError``), say which in one line instead of stopping
    the notebook."""
    try:
        yield
    except NotImplementedError as error:
        names = {frame.name for frame in traceback.extract_tb(error.__traceback__)}
        unfinished = [f.__name__ for f in functions if getattr(f, "__name__", "") in names]
        which = ", ".join(unfinished or [getattr(f, "__name__", "?") for f in functions])
        print(f"This cell needs {which}: finish that exercise first, then run this cell "
              "again.", file=sys.stdout)
