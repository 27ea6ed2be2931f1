"""`mugv label`: label which of two generated videos fits a prompt better, by hand or automatically.

- ``serve``: a local web page showing the two videos of each pair side by side; a click or
  a key records the choice in SQLite at once; a restart resumes at the first unlabelled pair.
- ``export``: the recorded choices as a `mugv.data.preference` labels file (JSON lines).
- ``auto``: labels every pair with the world oracle or a TW-BERT retrieval score instead.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import getpass
import signal
import threading
from pathlib import Path

from mugv.apps._config import AppError

PAIRS_HELP = (
    'JSON lines, one pair per line: {"prompt", "video_a", "video_b"} with optional "id" and '
    '"metadata"; video paths relative to the file\'s folder'
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label",
        help="label pairs of videos (a web page, SQLite) or label them with the oracle",
        description="Preference labels for pairs of generated videos: `serve` a page to choose "
        "by hand, `export` the choices as a labels file, or label `auto`matically.",
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)

    s = actions.add_parser(
        "serve",
        help="serve the labelling page",
        description="Serves a local page with the prompt and videos A and B side by side. "
        "Keys: 1/A = A better, 2/B = B better, 3/T = tie, space/S = skip, U/Backspace/Ctrl-Z = "
        "undo the last choice, R = replay both. Every choice is committed to the SQLite "
        "database at once; restarting resumes at the first pair without a choice. Ctrl-C or "
        "SIGTERM stops it.",
    )
    s.add_argument("pairs", metavar="PAIRS", help=f"the pairs file: {PAIRS_HELP}")
    s.add_argument(
        "--db", metavar="FILE", help="SQLite file of the choices (default: PAIRS with .sqlite)"
    )
    s.add_argument(
        "--annotator",
        default=None,
        help="name stored with each choice; one row per pair per annotator (default: the "
        "login name)",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on (default 8000; 0 picks a free one)",
    )
    s.set_defaults(func=serve)

    e = actions.add_parser(
        "export",
        help="write the choices as a labels file",
        description="Writes every choice but skips as a `PreferencePair` (source 'human', "
        "metadata with pair_id, annotator, labelled_at) in the JSON-lines labels format that "
        "the preference optimiser reads.",
    )
    e.add_argument("--db", required=True, metavar="FILE", help="the SQLite file `serve` wrote")
    e.add_argument("-o", "--out", required=True, metavar="JSONL", help="labels file to write")
    e.add_argument("--annotator", default=None, help="only this annotator's (default: everyone's)")
    e.set_defaults(func=export)

    a = actions.add_parser(
        "auto",
        help="label pairs automatically (oracle or retrieval score)",
        description="Prefers the video that scores higher against the prompt: with the "
        "synthetic world's oracle (the fraction of the prompt's objects shown with every "
        "attribute right) or a trained TW-BERT's video-text score. Equal scores are a tie; "
        "a pair that cannot be scored is skipped and reported.",
    )
    a.add_argument("pairs", metavar="PAIRS", help=f"the pairs file: {PAIRS_HELP}")
    a.add_argument("-o", "--out", required=True, metavar="JSONL", help="labels file to write")
    a.add_argument(
        "--by",
        choices=("oracle", "retrieval"),
        default="oracle",
        help="the labeller: 'oracle' (default; prompts of the synthetic world) or 'retrieval' "
        "(needs --retrieval)",
    )
    a.add_argument(
        "--retrieval", metavar="DIR", help="TW-BERT folder (save_pretrained) for --by retrieval"
    )
    a.add_argument(
        "--mode",
        choices=("vtm", "contrastive"),
        default="vtm",
        help="retrieval score: the matching head's probability (vtm, default) or the "
        "contrastive cosine",
    )
    a.set_defaults(func=auto)


def _annotator(name: str | None) -> str:
    if name is None:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "anonymous"
    if not name.strip():
        raise AppError("--annotator must be a non-empty name")
    return name.strip()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops the server as cleanly as Ctrl-C


def serve(args: argparse.Namespace) -> int:
    from mugv.apps._label_server import LabelServer
    from mugv.apps._label_store import LabelStore, read_pairs

    pairs = read_pairs(args.pairs)
    db = Path(args.db) if args.db else Path(args.pairs).with_suffix(".sqlite")
    store = LabelStore(db)
    try:
        server = LabelServer(
            pairs, store, annotator=_annotator(args.annotator), host=args.host, port=args.port
        )
        state = server.state()
        print(f"{state['done']} of {state['total']} pairs labelled; choices go to {db}")
        print(f"labelling page: {server.url}  (Ctrl-C to stop)", flush=True)
        stop_on_term = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if stop_on_term else None
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            if stop_on_term:
                signal.signal(signal.SIGTERM, previous)
        state = server.state()
        print(f"\nstopped: {state['done']} of {state['total']} pairs labelled")
    finally:
        store.close()
    return 0


def export(args: argparse.Namespace) -> int:
    from mugv.apps._label_store import LabelStore
    from mugv.data.preference import write_labels

    db = Path(args.db)
    if not db.is_file():
        raise AppError(f"--db {db}: no such file; `mugv label serve` writes it")
    store = LabelStore(db)
    try:
        labels = store.labels(args.annotator)
        skipped = sum(r[2] == "skip" for r in store.choices(args.annotator))
    finally:
        store.close()
    write_labels(args.out, labels)
    counts = collections.Counter(label.choice for label in labels)
    print(
        f"wrote {len(labels)} labels to {args.out} (a {counts['a']}, b {counts['b']}, "
        f"tie {counts['tie']}; {skipped} skipped pairs left out)"
    )
    return 0


def _retrieval_scorer(args: argparse.Namespace):
    if args.retrieval is None:
        raise AppError("--by retrieval needs --retrieval DIR, a TW-BERT save_pretrained folder")
    from mugv.retrieval import RetrievalError, TWBertScorer

    try:
        return TWBertScorer.from_pretrained(args.retrieval, mode=args.mode)
    except (RetrievalError, OSError) as exc:
        raise AppError(f"--retrieval {args.retrieval}: {exc}") from exc


def auto(args: argparse.Namespace) -> int:
    from mugv.apps._label_store import Pair, read_pairs
    from mugv.data import DataError
    from mugv.data.oracle import Oracle
    from mugv.data.preference import PreferencePair, oracle_labels, scorer_labels, write_labels

    pairs = read_pairs(args.pairs)
    found: dict[int, PreferencePair] = {}
    if args.by == "oracle":
        oracle = Oracle()
        for k, pair in enumerate(pairs):
            try:
                (found[k],) = oracle_labels([pair.prompt], [pair.video_a], [pair.video_b], oracle)
            except DataError as exc:  # a prompt outside the world, an unreadable video
                print(f"skipped pair {k + 1} ({pair.id}): {exc}")
    else:
        scorer = _retrieval_scorer(args)
        columns = [
            [p.prompt for p in pairs],
            [p.video_a for p in pairs],
            [p.video_b for p in pairs],
        ]
        found = {label.metadata["index"]: label for label in scorer_labels(*columns, scorer)}
        for k in sorted(set(range(len(pairs))) - set(found)):
            print(f"skipped pair {k + 1} ({pairs[k].id}): the retrieval model returned NaN")
    extra = {"scorer": f"tw-bert {args.mode}"} if args.by == "retrieval" else {}

    def with_pair(k: int, pair: Pair, label: PreferencePair) -> PreferencePair:
        metadata = pair.metadata | label.metadata | extra | {"index": k, "pair_id": pair.id}
        return dataclasses.replace(label, metadata=metadata)

    labels = [with_pair(k, pairs[k], label) for k, label in sorted(found.items())]
    write_labels(args.out, labels)
    counts = collections.Counter(label.choice for label in labels)
    print(
        f"labelled {len(labels)} of {len(pairs)} pairs with the {args.by} into {args.out} "
        f"(a {counts['a']}, b {counts['b']}, tie {counts['tie']})"
    )
    return 0
