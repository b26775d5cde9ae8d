# Sourced by scripts/*: create the virtualenv if needed and install billing-gql with its
# first-party plugins (editable) into it, quietly — only when what would be installed changed.
#
# BILLING_GQL_VENV_ROLE says for what: "test" (the default: scripts/test, CI) adds the test
# tools and the example plugins (examples/*); "serve" (scripts/serve) installs the service and
# its first-party plugins only, into its own virtualenv, so the example plugin never shows up
# in a served instance. BILLING_GQL_VENV overrides the directory (default .venv for test,
# .venv-serve for serve).
#
# A stamp in the virtualenv holds a hash of what the last install was given (the role, the
# Python version, the package list and every pyproject.toml involved); when it matches, pip is
# not run at all. A fresh virtualenv (CI's) has no stamp, so it always installs.
ROLE="${BILLING_GQL_VENV_ROLE:-test}"
if [ "$ROLE" = serve ]; then
  VENV="${BILLING_GQL_VENV:-.venv-serve}"
  packages=(-e ".")
  dirs=(plugins/*/)
else
  VENV="${BILLING_GQL_VENV:-.venv}"
  packages=(-e ".[test]")
  dirs=(plugins/*/ examples/*/)
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
projects=(pyproject.toml)
for plugin in "${dirs[@]}"; do
  if [ -f "$plugin/pyproject.toml" ]; then
    packages+=(-e "$plugin")
    projects+=("$plugin/pyproject.toml")
  fi
done
STAMP="$VENV/.billing-gql-install-$ROLE"
digest="$("$VENV/bin/python" - "$ROLE" "${packages[@]}" -- "${projects[@]}" <<'PY'
import hashlib, sys
args = sys.argv[1:]
split = args.index("--")
h = hashlib.sha256(repr((sys.version, args[:split])).encode())
for path in args[split + 1:]:
    with open(path, "rb") as f:
        h.update(path.encode() + b"\0" + f.read())
print(h.hexdigest())
PY
)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$digest" ]; then
  echo "== installing billing-gql into $VENV" >&2
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install -q "${packages[@]}" >&2
  echo "$digest" > "$STAMP"
fi
