#!/bin/sh
# Workflow 1 (Edge): "acquire" atom-resolved images with the simulated microscope.
# Runs beside mscope_sim.py and calibration.json (in the edge agent's data dir);
# the images land in $ZMESH_OUTPUT_DIR. Extra arguments go to mscope_sim.py
# (--n, --size, --seed, --quick).
set -eu
here=$(dirname "$0")
for dir in "$here" "${ZMESH_AGENT_DIR:-$here}"; do
  if [ -f "$dir/mscope_sim.py" ]; then sim="$dir/mscope_sim.py"; break; fi
done
for dir in "$here" "${ZMESH_AGENT_DIR:-$here}"; do
  if [ -f "$dir/calibration.json" ]; then set -- --calibration "$dir/calibration.json" "$@"; break; fi
done
if [ -z "${sim:-}" ]; then
  echo "mscope_sim.sh: mscope_sim.py not found beside the script or in \$ZMESH_AGENT_DIR" >&2
  exit 2
fi
exec "${PYTHON:-python3}" "$sim" --out "${ZMESH_OUTPUT_DIR:-.}" "$@"
