"""Run a workflow script under a manager: ``python -m zambeze_mesh.execution.wf_runner parsl S``.

For ``parsl`` the runner loads the Parsl config built from ``$ZMESH_WF_CONFIG``
(:func:`zambeze_mesh.wf.parsl_load`), runs the script as ``__main__`` with the
remaining arguments in ``sys.argv``, and cleans the DataFlowKernel up, also when
the script fails. The script may call ``zambeze_mesh.wf.parsl_load()`` itself: it
returns the already loaded kernel.
"""

from __future__ import annotations

import runpy
import sys
import traceback


def main(argv: list[str] | None = None) -> int:
    """``wf_runner MANAGER SCRIPT [ARGS...]``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "parsl":
        print(
            "usage: python -m zambeze_mesh.execution.wf_runner parsl SCRIPT [ARGS...]",
            file=sys.stderr,
        )
        return 2
    script = args[1]
    from zambeze_mesh.execution.parsl_config import cleanup_parsl, load_parsl

    try:
        load_parsl()
    except Exception:
        traceback.print_exc()
        print("zmesh: could not load the Parsl configuration", file=sys.stderr)
        return 3
    code = 0
    try:
        sys.argv = [script, *args[2:]]
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        cleanup_parsl()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
