"""The `frauddemo` command line: thin verbs that call into the package's modules."""
import sys


def main(argv=None) -> int:
    print("frauddemo: not yet", file=sys.stderr)
    return 2
