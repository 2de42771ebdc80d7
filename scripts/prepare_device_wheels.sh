#!/usr/bin/env bash
# Fetch the wheels an offline GPU host needs to run the whole stack and its load test:
# every package llmq (with its `loadtest` extra) depends on, at the versions installed in
# this environment (tested together), as CPython 3.12 manylinux x86-64 wheels, into .whl/.
# Packages the GPU image already ships (torch and friends, numpy, transformers, ...) are
# skipped here; scripts/device_loadtest.sh also installs only what the host lacks.
#
#   scripts/prepare_device_wheels.sh              # uses .venv/bin/python, else python3
#   PYTHON=path/to/python WHEEL_DIR=.whl scripts/prepare_device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEEL_DIR=${WHEEL_DIR:-.whl}
# Surely on the GPU image: torch and what torch and transformers need (its torch build must not
# be replaced). Space-separated, globs allowed. Anything else is fetched; the device script
# installs only what the host turns out to lack.
SKIP=${SKIP:-"torch triton nvidia-* cuda-* numpy transformers tokenizers safetensors huggingface-hub hf-xet
 regex sympy mpmath networkx jinja2 markupsafe filelock fsspec typing-extensions setuptools
 packaging tqdm pyyaml sentencepiece"}

mkdir -p "$WHEEL_DIR"
shopt -s nocaseglob  # wheel file names keep the project's own capitals (Flask_Login-...)

# name==version for the dependency closure of llmq[loadtest], markers evaluated for a
# Linux x86-64 CPython 3.12 host, read from this environment's installed metadata.
pins=$("$PYTHON" - "$SKIP" <<'PY'
import fnmatch
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

skip = sys.argv[1].split()
target = default_environment()
target.update(python_version="3.12", python_full_version="3.12.3", sys_platform="linux",
              platform_system="Linux", platform_machine="x86_64", implementation_name="cpython",
              platform_python_implementation="CPython", os_name="posix")


def wanted(requirement, extras):
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**target, "extra": extra}) for extra in (extras or {""}))


todo = [("llmq", {"loadtest"})]
seen, pins, missing = set(), [], []
while todo:
    name, extras = todo.pop()
    key = canonicalize_name(name)
    if (key, frozenset(extras)) in seen:
        continue
    seen.add((key, frozenset(extras)))
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        missing.append(name)
        continue
    if key != "llmq" and not any(fnmatch.fnmatch(key, pattern) for pattern in skip):
        pins.append(f"{key}=={dist.version}")
    for line in dist.requires or []:
        requirement = Requirement(line)
        if wanted(requirement, extras):
            todo.append((requirement.name, set(requirement.extras)))
for name in sorted(set(missing)):
    print(f"not installed here, fetch it by hand: {name}", file=sys.stderr)
print("\n".join(sorted(set(pins))))
PY
)

failed=()
for pin in $pins; do
    name=${pin%%==*}
    if compgen -G "$WHEEL_DIR/$(echo "$name" | tr - _)-${pin#*==}-*.whl" >/dev/null \
        || compgen -G "$WHEEL_DIR/${name}-${pin#*==}-*.whl" >/dev/null; then
        continue  # fetched on an earlier run
    fi
    echo "fetching $pin" >&2
    # Some wheels only exist for newer manylinux tags; pip matches each tag exactly.
    if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 \
        -d "$WHEEL_DIR" "$pin"; then
        failed+=("$pin")
    fi
done

# The GPU host cannot pull a model: Llama-3.1-8B's config (random weights at run time) with the
# default model's tokenizer, as scripts/device_loadtest.sh expects it.
"$PYTHON" - "$WHEEL_DIR/models/Llama-3.1-8B" <<'PY'
import sys
from pathlib import Path

from engine.models.dummy import write_dummy_model

folder = write_dummy_model("llama-3.1-8b", Path(sys.argv[1]))
if not (folder / "tokenizer.json").is_file():
    sys.exit(f"{folder} has no tokenizer: run `llmq models pull` first")
print(f"dummy model folder {folder}", file=sys.stderr)
PY

echo "$(ls "$WHEEL_DIR"/*.whl | wc -l) wheels, $(du -sh "$WHEEL_DIR" | cut -f1) in $WHEEL_DIR" >&2
if ((${#failed[@]})); then
    echo "no CPython 3.12 manylinux wheel for: ${failed[*]}" >&2
    exit 1
fi
