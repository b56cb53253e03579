"""Drive a notebook that people are watching: add cells, run them, read the results.

    python examples/drive_notebook.py http://127.0.0.1:8888 demo.ipynb --token TOKEN

The script joins as a collaborator named "drive_notebook.py": people with the notebook open
see its edits and its cursor, and the runs it asks for go through the kernel's shared queue.
"""

from __future__ import annotations

import argparse

from kernel_collab.client import connect_blocking


def main() -> None:
    """Append a cell that computes something, run it, print its output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server_url")
    parser.add_argument("path", help="notebook path relative to the server root")
    parser.add_argument("--token", help="the Jupyter server's token")
    args = parser.parse_args()

    def answer(prompt: str, password: bool) -> str:
        return "" if password else input(prompt)  # input() in our runs asks here

    with connect_blocking(args.server_url, args.path, token=args.token,
                          name="drive_notebook.py", on_input=answer) as nb:  # fmt: skip
        print(f"{args.path}: {len(nb.cells)} cells, kernel {nb.status.get('kernel_status')}")
        with nb.transaction():  # people see both cells arrive at once
            nb.append_cell("## Added by a script", cell_type="markdown")
            cell = nb.append_cell("import sys\nprint(sys.version.split()[0])")
        for output in nb.run(cell).wait():
            print(output.get("text") or output.get("data", {}).get("text/plain"))
        nb.sync()  # everything above is stored before we leave


if __name__ == "__main__":
    main()
