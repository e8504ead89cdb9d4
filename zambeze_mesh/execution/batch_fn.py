"""Call a shipped function inside a batch job: ``python -m zambeze_mesh.execution.batch_fn IN OUT``.

``IN`` holds the cloudpickled ``(func, args, kwargs)``; the cloudpickled return
value is written to ``OUT``. On an exception the traceback goes to stderr and the
exit code is 1.
"""

from __future__ import annotations

import os
import sys
import traceback


def main(argv: list[str] | None = None) -> int:
    """Run the function; 0 on success, 1 when it raised, 2 on bad usage."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m zambeze_mesh.execution.batch_fn IN OUT", file=sys.stderr)
        return 2
    import cloudpickle

    src, dst = args
    try:
        with open(src, "rb") as f:
            func, fargs, fkwargs = cloudpickle.loads(f.read())
        value = func(*fargs, **fkwargs)
        data = cloudpickle.dumps(value)
    except BaseException:
        traceback.print_exc()
        return 1
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
