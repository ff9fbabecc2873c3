"""Make Debian's Mininet (installed for the system Python only) importable from the virtualenv.

Only the `mininet` package is exposed, through a private directory on a .pth line, so that the
rest of /usr/lib/python3/dist-packages does not shadow the virtualenv's own packages.
"""

import site
import sys
from pathlib import Path

SYSTEM_DIST = Path("/usr/lib/python3/dist-packages")


def main() -> int:
    source = SYSTEM_DIST / "mininet"
    if not source.is_dir():
        print(f"link_mininet: {source} not found (is the 'mininet' package installed?)",
              file=sys.stderr)
        return 2
    shim = Path(sys.prefix) / "system-mininet"
    shim.mkdir(exist_ok=True)
    link = shim / "mininet"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(source)
    pth = Path(site.getsitepackages()[0]) / "edgestage-system-mininet.pth"
    pth.write_text(f"{shim}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
