"""The `llmsm` console script. `llmsm statusline` is answered before the CLI framework loads:
status lines run every few seconds, and typer's start-up would triple their cost."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["statusline"] and not {"-h", "--help"} & set(args):
        from llmsm.cli.statusline import main as statusline_main

        sys.exit(statusline_main(args[1:]))
    from llmsm.cli.main import main as full_main

    full_main()


if __name__ == "__main__":
    main()
