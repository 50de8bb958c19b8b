#!/usr/bin/env bash
# Benchmark: size and time of the core install (`pip install .`, no extras) in a fresh venv,
# (a) beside an existing torch 2.13.0 and (b) from nothing (pip then picks the newest torch it can
# reach; on Linux from PyPI that is a CUDA build). Writes benchmarks/results/bench_install.json.
# Runtime: about 5 min; needs ~7 GB of free disk under $TMPDIR. Usage: bash benchmarks/bench_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
size_mb() { du -sm "$1" | cut -f1; }
elapsed() { local s=$SECONDS; "$@" >/dev/null; echo $((SECONDS - s)); }

python3 -m venv "$work/a"; "$work/a/bin/python" -m pip install --quiet torch==2.13.0
a_before=$(size_mb "$work/a")
a_time=$(elapsed "$work/a/bin/python" -m pip install --quiet .)
a_after=$(size_mb "$work/a")
a_torch=$("$work/a/bin/python" -c "import torch; print(torch.__version__)")
rm -rf "$work/a"

python3 -m venv "$work/b"; b_before=$(size_mb "$work/b")
b_time=$(elapsed "$work/b/bin/python" -m pip install --quiet .)
b_after=$(size_mb "$work/b")
b_torch=$("$work/b/bin/python" -c "import torch; print(torch.__version__)")
b_count=$("$work/b/bin/python" -m pip list --format=freeze | wc -l)

mkdir -p benchmarks/results
cat > benchmarks/results/bench_install.json <<JSON
{
 "benchmark": "core install (pip install . without extras) in a fresh venv",
 "beside_torch_2_13": {"seconds": $a_time, "venv_mb_before": $a_before, "venv_mb_after": $a_after,
                       "added_mb": $((a_after - a_before)), "torch_after": "$a_torch"},
 "from_nothing": {"seconds": $b_time, "venv_mb_before": $b_before, "venv_mb_after": $b_after,
                  "torch": "$b_torch", "packages": $b_count},
 "date": "$(date -u +%Y-%m-%dT%H:%MZ)", "python": "$(python3 --version | cut -d' ' -f2)",
 "load_average_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "note": "packages come from local disk here (a wheel directory and a file:// index), so times are not download times"
}
JSON
cat benchmarks/results/bench_install.json
