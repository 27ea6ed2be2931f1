"""`mugv curate` on a corpus with known answers, with a real (tiny) TSG captioner and TW-BERT
scorer loaded from folders: every input accounted for, captions and alignment scores written."""

import json

import torch

from mugv.apps.cli import main
from mugv.data.curation.synthetic import make_corpus
from mugv.data.world import SyntheticWorld, WorldConfig


def _save_models(root):
    from mugv.captioning import TSG, TSGCaptioner, oracle_scene_graph, tsg_config
    from mugv.captioning.data import build_vocabularies, world_examples
    from mugv.retrieval import TWBert, tiny

    torch.manual_seed(0)
    world = SyntheticWorld(WorldConfig(train_size=20))
    words, labels = build_vocabularies(world_examples(world, "train"))
    model = TSG(tsg_config("tiny", vocab_size=len(words), num_labels=len(labels), max_length=12))
    TSGCaptioner(model, words, labels, graph_source=oracle_scene_graph).save(root / "tsg")
    TWBert(tiny()).save_pretrained(root / "twbert")
    return root / "tsg", root / "twbert"


def test_curate_app_captions_scores_and_accounts_for_everything(tmp_path, capsys):
    items = make_corpus(tmp_path / "raw", num_videos=5, seed=2, height=64, width=96)
    tsg, twbert = _save_models(tmp_path)
    out = tmp_path / "curated"
    args = ["curate", str(tmp_path / "raw"), "-o", str(out), "--captioner", str(tsg)]
    assert main([*args, "--scorer", str(twbert), "--set", "dedup.max_hamming=8"]) == 0
    printed = capsys.readouterr().out
    assert "kept" in printed and "report:" in printed
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {i.path for i in items}
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept, rows
    for row in kept:
        assert row["caption"] and "align" in row["scores"] and row["shard"]
    assert (out / "report.html").exists()


def test_curate_app_bad_inputs_fail_in_one_line(tmp_path, capsys):
    assert main(["curate", str(tmp_path / "nothing*.mp4"), "-o", str(tmp_path / "o")]) == 2
    assert "neither a file, a folder nor a matching glob" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("blur: {min_sharp: 1}\n")
    video = make_corpus(tmp_path / "raw", num_videos=1, seed=0, broken_fraction=0.0)[0].path
    assert main(["curate", video, "-o", str(tmp_path / "o"), "-c", str(tmp_path / "c.yaml")]) == 2
    assert "blur: unknown field(s) ['min_sharp']" in capsys.readouterr().err
