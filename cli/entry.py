"""The `llmsm` console script. `llmsm statusline` is answered before the CLI framework loads:
status lines run every few seconds, and typer's start-up would triple their cost. So is
`llmsm mcp [--db PATH]` (the MCP server; `llmsm mcp install` and `--help` go through typer):
a client gives a server about 2 s to answer, and the SDK's import takes most of them."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["statusline"] and not {"-h", "--help"} & set(args):
        from llmsm.cli.statusline import main as statusline_main

        sys.exit(statusline_main(args[1:]))
    rest = args[1:]
    if args[:1] == ["mcp"] and (not rest or (len(rest) == 2 and rest[0] == "--db") or (len(rest) == 1 and rest[0].startswith("--db="))):
        # the MCP server must answer `initialize` within ~2 s of its launch: no CLI framework
        from llmsm.cli.mcp_server import main as mcp_main

        sys.exit(mcp_main(args[1:]))
    from llmsm.cli.main import main as full_main

    full_main()


if __name__ == "__main__":
    main()
