#!/usr/bin/env bash
# The mutation score of one module, running only the tests named for it, in a scratch git
# worktree of HEAD (committed code only), so that pyproject.toml and mutants/ here stay as
# they are. Two workers, one torch thread each (INITBENCH_TEST_THREADS=1, tests/conftest.py).
#
#   scripts/mutation.sh src/initbench/engine.py tests/test_engine.py
#   scripts/mutation.sh src/initbench/telemetry/stats.py tests/test_telemetry.py
#
# Prints mutmut's survivors at the end and where the worktree is (mutmut show/results there);
# remove it with `git worktree remove --force <dir>`.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 <module file under src/initbench> <test file or node id>..." >&2
    exit 2
fi
module=$1
shift
repo=$(git rev-parse --show-toplevel)
if ! git -C "$repo" cat-file -e "HEAD:$module" 2>/dev/null; then
    echo "$module: not a file in HEAD (give a path like src/initbench/engine.py)" >&2
    exit 2
fi
for t in "$@"; do
    if ! git -C "$repo" cat-file -e "HEAD:${t%%::*}" 2>/dev/null; then
        echo "$t: no such test file in HEAD (give a path like tests/test_engine.py)" >&2
        exit 2
    fi
done
dir=$(mktemp -d "${TMPDIR:-/tmp}/initbench-mutation.XXXXXX")
git -C "$repo" worktree add --detach "$dir" HEAD >/dev/null
python - "$dir/pyproject.toml" "$module" "$@" <<'PY'
import json
import re
import sys

path, module, *tests = sys.argv[1:]
text = open(path).read()
toml_list = r'\[(?:[^\[\]"]|"[^"]*")*\]'  # a list of strings (which may hold brackets)
text, n1 = re.subn(r"only_mutate = " + toml_list, f"only_mutate = {json.dumps([module])}", text)
text, n2 = re.subn(r"pytest_add_cli_args_test_selection = " + toml_list,
                   f"pytest_add_cli_args_test_selection = {json.dumps(tests)}", text)
if (n1, n2) != (1, 1):
    sys.exit(f"{path}: [tool.mutmut] has no only_mutate or test selection list to narrow")
open(path, "w").write(text)
PY
echo "mutation: $module with ${*} in $dir"
cd "$dir"
export INITBENCH_TEST_THREADS=1
nice -n 19 mutmut run --max-children 2 | tr '\r' '\n' | tail -n 2
mutmut results
echo "worktree: $dir   (mutmut show <name> there; git worktree remove --force $dir)"
