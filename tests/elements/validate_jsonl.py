#!/usr/bin/python3
"""Validates every line of a JSON Lines file against a JSON Schema.

  validate_jsonl.py SCHEMA.json FILE.jsonl   -> exit 0 when every line is valid
"""
import json
import sys

import jsonschema


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    with open(sys.argv[2]) as f:
        for n, line in enumerate(f, 1):
            for err in validator.iter_errors(json.loads(line)):
                print(f"{sys.argv[2]}:{n}: {'/'.join(map(str, err.absolute_path))}: {err.message}",
                      file=sys.stderr)
                bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
