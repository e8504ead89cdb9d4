"""The ``zmesh`` command line.

gRPC core's own stderr logging is silenced here (the agent writes structured logs to
its home instead) unless the user asks for it with ``GRPC_VERBOSITY``.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
