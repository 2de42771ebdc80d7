# Sourced by the device scripts: install the wheels of .whl/ whose distribution the GPU host lacks
# (its torch stack stays as it is) into $SITE and put the repository and $SITE on PYTHONPATH.
# Needs PY and SITE set; sets MISSING_WHEELS (how many were installed) and WHEELS_RC (pip's exit).
missing=()
for wheel in .whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    "$PY" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$name" 2>/dev/null || missing+=("$wheel")
done
MISSING_WHEELS=${#missing[@]}
WHEELS_RC=0
mkdir -p "$SITE"
if ((MISSING_WHEELS)); then
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${missing[@]}" 2>&1 | tail -5
    WHEELS_RC=${PIPESTATUS[0]}
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
