"""The experiment runner (fastreid_ext/experiments): skips finished (arm, seed) results, runs chained stages in
order with the earlier stage's weights, aggregates mean / sample std correctly (numbers by hand), writes table +
plot, refuses missing configs before running anything, reads FastReID's evaluation tables; one tiny real run of one
arm through the child process (tools/train_net.py)."""
import json
import math
import os
from pathlib import Path

import pytest

from fastreid_ext.experiments import comparisons as C
from fastreid_ext.experiments.report import aggregate
from fastreid_ext.experiments.runner import MissingConfigs, parse_eval_tables, run_experiments

ROOT = Path(__file__).resolve().parents[1]
# arm "A" / "B" per seed: hand-picked SynthPedA/mAP values
VALUES = {("a", 0): 10.0, ("a", 1): 20.0, ("a", 2): 40.0, ("b2", 0): 1.0, ("b2", 1): 2.0, ("b2", 2): 6.0,
          ("b1", 0): 0.0, ("b1", 1): 0.0, ("b1", 2): 0.0}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    cfg = tmp_path / "fake.yml"
    cfg.write_text("_BASE_: x.yml\n")
    comp = C.Comparison(
        name="fake_cmp", description="test", metrics=["SynthPedA/mAP", "kpt_err"],
        stages={"a": C.Stage("a", str(cfg), ("K", "1")), "b1": C.Stage("b1", str(cfg), ("K", "2")),
                "b2": C.Stage("b2", str(cfg), ("K", "3"), weights=(("MODEL.WEIGHTS", "b1"),), measure=("m",))},
        arms=[C.Arm("A", ("a",)), C.Arm("B", ("b1", "b2"), include=(("b1", "src/"),))])
    monkeypatch.setitem(C.COMPARISONS, comp.name, comp)
    calls, history = [], []

    def executor(task):
        for dep in task.deps:  # the dependency finished (in this or an earlier run) before this stage starts
            assert dep in history
        history.append(task.key)
        calls.append((task.stage.name, task.seed, task.key, list(task.argv)))
        m = {"SynthPedA/mAP": VALUES[(task.stage.name, task.seed)]}
        return {"command": "python " + " ".join(task.argv), "metrics": m,
                "measures": {"kpt_err": 3.0} if task.stage.measure else {}, "seconds": 1.0, "key": task.key}

    return comp, calls, executor


def _handmade(out, arm, seed, value):
    d = out / "fake_cmp" / arm / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"arm": arm, "seed": seed, "metrics": {"SynthPedA/mAP": value},
                                               "seconds": 60.0, "stages": []}))


def test_skips_finished_and_aggregates(fake, tmp_path):
    comp, calls, executor = fake
    out = tmp_path / "exp"
    _handmade(out, "A", 0, 10.0)
    _handmade(out, "A", 1, 20.0)
    res = run_experiments(["fake_cmp"], [0, 1, 2], out, executor=executor, command="CMD")
    ran = sorted((n, s) for n, s, _, _ in calls)
    # A: only seed 2; B: both stages for every seed; nothing else
    assert ran == [("a", 2), ("b1", 0), ("b1", 1), ("b1", 2), ("b2", 0), ("b2", 1), ("b2", 2)]
    # b2 got b1's model_final.pth of the same seed, and the seed
    for n, s, key, argv in calls:
        if n == "b2":
            w = argv[argv.index("MODEL.WEIGHTS") + 1]
            b1 = next(c for c in calls if c[0] == "b1" and c[1] == s)
            assert w.endswith(f"_s{s}_{b1[2]}/model_final.pth")
            assert argv[argv.index("SEED") + 1] == str(s)
    assert res["failed"] == {}
    recs = {(r["arm"], r["seed"]): r for r in res["records"]["fake_cmp"]}
    assert recs[("B", 1)]["metrics"] == {"SynthPedA/mAP": 2.0, "kpt_err": 3.0, "src/SynthPedA/mAP": 0.0}
    # by hand: A = 10, 20, 40 -> mean 70/3, sample std sqrt(((10-70/3)^2 + (20-70/3)^2 + (40-70/3)^2) / 2)
    #          = sqrt(700/3) = 15.2753; B = 1, 2, 6 -> mean 3, std sqrt((4 + 1 + 9) / 2) = sqrt(7) = 2.6458
    agg = aggregate(res["records"]["fake_cmp"], ["SynthPedA/mAP"], ["A", "B"])
    assert agg["A"]["SynthPedA/mAP"]["mean"] == pytest.approx(23.333333, abs=1e-5)
    assert agg["A"]["SynthPedA/mAP"]["std"] == pytest.approx(15.275252, abs=1e-5)
    assert agg["B"]["SynthPedA/mAP"]["std"] == pytest.approx(2.645751, abs=1e-5)
    assert agg["A"]["SynthPedA/mAP"]["n"] == 3
    md = (out / "fake_cmp" / "report.md").read_text()
    assert "| A | 23.33 ± 15.28 (n=3) | – |" in md
    assert "| B | 3.00 ± 2.65 (n=3) | 3.00 ± 0.00 (n=3) |" in md
    assert "| A | 2 | 40.00 | – |" in md and "    CMD" in md
    with open(out / "fake_cmp" / "report.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # a second run redoes nothing
    calls.clear()
    res2 = run_experiments(["fake_cmp"], [0, 1, 2], out, executor=executor)
    assert calls == [] and len(res2["records"]["fake_cmp"]) == 6


def test_interrupted_arm_reuses_finished_stage(fake, tmp_path):
    comp, calls, executor = fake
    out = tmp_path / "exp"
    run_experiments(["fake_cmp"], [0], out, executor=executor, arms=["B"], report=False)
    # an interruption after b1: b2's result and the arm result are gone
    b2 = next(c for c in calls if c[0] == "b2")
    stage_dir = b2[3][b2[3].index("OUTPUT_DIR") + 1]
    os.remove(os.path.join(stage_dir, "stage_result.json"))  # (tmp_path: outside the repository, absolute)
    os.remove(out / "fake_cmp" / "B" / "seed0" / "result.json")
    calls.clear()
    run_experiments(["fake_cmp"], [0], out, executor=executor, arms=["B"], report=False)
    assert [c[0] for c in calls] == ["b2"]


def test_missing_config_refused_before_running(fake, tmp_path, monkeypatch):
    comp, calls, executor = fake
    bad = C.Comparison(name="fake_missing", description="", metrics=["x"],
                       stages={"s": C.Stage("s", "projects/None/configs/does_not_exist.yml")}, arms=[C.Arm("S", ("s",))])
    monkeypatch.setitem(C.COMPARISONS, bad.name, bad)
    with pytest.raises(MissingConfigs, match="does_not_exist.yml"):
        run_experiments(["fake_cmp", "fake_missing"], [0], tmp_path / "exp", executor=executor)
    assert calls == []


def test_parse_eval_tables():
    log = """[12/01 00:24:46 fastreid.evaluation.testing]: Evaluation results in csv format: 
| Dataset   | Rank-1   | mAP   |
|:----------|:---------|:------|
| SynthPedA | 10.00    | 5.00  |
[12/01 00:30:46 fastreid.evaluation.testing]: Evaluation results in csv format: 
| Dataset   | Rank-1   | mAP   | GL/mAP   |
|:----------|:---------|:------|:---------|
| SynthPedA | 95.00    | 86.25 | 88.10    |
[12/01 00:30:47 fastreid.evaluation.testing]: Evaluation results in csv format: 
\x1b[36m| Dataset   | Rank-1   | mAP   |
|:----------|:---------|:------|
| SynthPedB | 40.50    | 20.75 |\x1b[0m
"""
    assert parse_eval_tables(log) == {"SynthPedA/Rank-1": 95.0, "SynthPedA/mAP": 86.25, "SynthPedA/GL/mAP": 88.1,
                                      "SynthPedB/Rank-1": 40.5, "SynthPedB/mAP": 20.75}


def test_ari_outliers_as_singletons():
    from fastreid_ext.experiments.measure import adjusted_rand_with_outliers

    # perfect clustering of ids 0,0,1,1 -> 1; both images of id 1 outliers -> partition {0,0},{2},{3}:
    # ARI by hand (pair counting): index = 1 (the 0-0 pair), expected = 1 * 2 / 6 = 1/3, max = (2 + 1) / 2 = 1.5
    # -> (1 - 1/3) / (1.5 - 1/3) = 4/7
    assert adjusted_rand_with_outliers([5, 5, 7, 7], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert adjusted_rand_with_outliers([5, 5, 7, 7], [0, 0, -1, -1]) == pytest.approx(4 / 7)


def test_tiny_real_run_through_child(datasets_root, tmp_path, monkeypatch):
    """One arm, 2 iterations at 64x32 on tiny SynthPed, through tools/train_net.py in a child process."""
    comp = C.Comparison(name="fake_real", description="", metrics=["SynthPedA/Rank-1", "SynthPedA/mAP"],
                        stages={"s": C.Stage("s", "configs/SynthPed/bagtricks_R18.yml",
                                             ("DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.DEPTH", "18x"))},
                        arms=[C.Arm("Baseline", ("s",))])
    monkeypatch.setitem(C.COMPARISONS, comp.name, comp)
    res = run_experiments(["fake_real"], [3], tmp_path / "exp", budget="smoke", threads=1, gen_workers=1, root=ROOT)
    assert res["failed"] == {}
    (rec,) = res["records"]["fake_real"]
    assert set(rec["metrics"]) >= {"SynthPedA/Rank-1", "SynthPedA/mAP"}
    assert not math.isnan(rec["metrics"]["SynthPedA/mAP"])
    cmd = rec["stages"][0]["command"]
    assert "tools/train_net.py" in cmd and "SEED 3" in cmd
    assert (tmp_path / "exp" / "fake_real" / "report.md").is_file()


def test_edited_config_is_a_new_run(fake, tmp_path):
    comp, calls, executor = fake
    out = tmp_path / "exp"
    run_experiments(["fake_cmp"], [0], out, executor=executor, arms=["A"], report=False)
    assert [c[0] for c in calls] == ["a"]
    calls.clear()
    run_experiments(["fake_cmp"], [0], out, executor=executor, arms=["A"], report=False)
    assert calls == []
    cfg = comp.stages["a"].config
    with open(cfg, "a") as f:
        f.write("SOLVER:\n  BASE_LR: 0.1\n")
    run_experiments(["fake_cmp"], [0], out, executor=executor, arms=["A"], report=False)
    assert [c[0] for c in calls] == ["a"]


def test_methods_register_their_measurements():
    from fastreid_ext.experiments.measure import load_measurements

    assert {"rbnet_maps", "mmt_pseudo_labels", "adabn"} <= set(load_measurements())


def _opts(argv):
    """A planned train_net argv's ``KEY VALUE`` pairs (the last value of a key wins, as in FastReID's merge)."""
    i = argv.index("--config-file") + 2
    rest = [a for a in argv[i:] if a != "--eval-only"]
    return dict(zip(rest[::2], rest[1::2]))


@pytest.mark.parametrize("name,gan_tags", [("posegan", {"gan": True}), ("posegan_cpu", {"gan": False, "ganDi": True})])
def test_posegan_plan_shares_pretraining_and_differs_only_in_gan_weights(tmp_path, monkeypatch, name, gan_tags):
    """gan_tags: each GAN arm's stage tag -> whether its stage III runs D_i (posegan_cpu: one arm without, one with)."""
    import fastreid_ext
    from fastreid_ext.experiments import runner

    monkeypatch.setattr(runner, "ROOT", ROOT)
    comp = C.get_comparison(name)
    p = runner.plan(comp, [0, 1], tmp_path)
    tasks = p["stages"]
    gan_arms = {next(s for s in a.stages if s.startswith("stage3_"))[len("stage3_"):]: a
                for a in comp.arms if "GAN" in a.name}
    assert set(gan_arms) == set(gan_tags)
    (sup_arm,) = [a for a in comp.arms if "supervised" in a.name]
    assert len(comp.arms) == len(gan_arms) + 1
    by = {(arm.name, seed): names for arm, seed, _, names in p["arms"]}
    gan_keys = ["MODEL.POSE_TRANSFER.GAN.LOSS." + k for k in ("ADV_ID", "ADV_POSE", "RECON", "SAME_POSE")]
    # dependency order of the plan: every stage after the one whose model_final.pth it takes
    order = comp.stage_order()
    for tag in list(gan_tags) + ["sup"]:
        chain = ["stage1", "stage2", f"stage3_{tag}", f"srcB_{tag}", f"B_{tag}"]
        assert [order.index(s) for s in chain] == sorted(order.index(s) for s in chain)

    def cfg_of(key):
        t = tasks[key]
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(str(ROOT / t.stage.config))
        cfg.merge_from_list([x for kv in _opts(t.argv).items() for x in kv])
        return cfg

    for gtag, di in gan_tags.items():
        gan_arm = gan_arms[gtag]
        for seed in (0, 1):
            g, s = by[(gan_arm.name, seed)], by[(sup_arm.name, seed)]
            for tag, names in ((gtag, g), ("sup", s)):
                chain = [names[x] for x in ("stage1", "stage2", f"stage3_{tag}", f"srcB_{tag}", f"B_{tag}")]
                for prev, cur in zip(chain, chain[1:]):
                    assert tasks[cur].deps == [prev]
                    assert _opts(tasks[cur].argv)["TRANSFER.SOURCE_WEIGHTS"].endswith(
                        tasks[prev].out_dir.name + "/model_final.pth")
            # the arms share stages I and II (one run each), not their stage III
            assert g["stage1"] == s["stage1"] and g["stage2"] == s["stage2"]
            assert g[f"stage3_{gtag}"] != s["stage3_sup"]
            # stage III: the same config, the same overrides but for the GAN weights, 0 in the supervised arm
            a3, b3 = tasks[g[f"stage3_{gtag}"]], tasks[s["stage3_sup"]]
            assert a3.stage.config == b3.stage.config
            oa, ob = _opts(a3.argv), _opts(b3.argv)
            diff = {k for k in set(oa) | set(ob) if oa.get(k) != ob.get(k)} - {"OUTPUT_DIR"}
            # without D_i: ADV_ID 0 in both arms, the other three weights differ
            assert diff == set(gan_keys if di else gan_keys[1:])
            assert all(float(ob[k]) == 0.0 for k in gan_keys)
            assert all(float(oa.get(k, 1.0)) > 0 for k in gan_keys[1:])
            assert (float(oa.get(gan_keys[0], 1.0)) > 0) == di
            # the later stages differ only in the weights they start from
            for st in ("srcB", "B"):
                ta, tb = tasks[g[f"{st}_{gtag}"]], tasks[s[f"{st}_sup"]]
                oa, ob = _opts(ta.argv), _opts(tb.argv)
                assert ta.stage.config == tb.stage.config
                assert {k for k in set(oa) | set(ob) if oa.get(k) != ob.get(k)} == {"TRANSFER.SOURCE_WEIGHTS",
                                                                                      "OUTPUT_DIR"}
                if st == "B":
                    assert oa["TRANSFER.FRACTION_SEED"] == str(seed)
        # per-seed pre-training
        assert by[(gan_arm.name, 0)]["stage1"] != by[(gan_arm.name, 1)]["stage1"]

        # the effective configs: identical budgets stage by stage; GAN terms on in one arm, off in the other
        g, s = by[(gan_arm.name, 0)], by[(sup_arm.name, 0)]
        for sg, ss in ((f"stage3_{gtag}", "stage3_sup"), (f"srcB_{gtag}", "srcB_sup"), (f"B_{gtag}", "B_sup")):
            cg, cs = cfg_of(g[sg]), cfg_of(s[ss])
            for k in ("MAX_EPOCH", "ITERS_PER_EPOCH", "IMS_PER_BATCH", "BASE_LR", "STEPS", "WARMUP_ITERS"):
                assert cg.SOLVER[k] == cs.SOLVER[k], (sg, k)
            assert cg.SOLVER.MAX_EPOCH * cg.SOLVER.ITERS_PER_EPOCH > 0
            assert tuple(cg.INPUT.SIZE_TRAIN) == tuple(cs.INPUT.SIZE_TRAIN)
        c3g, c3s = cfg_of(g[f"stage3_{gtag}"]), cfg_of(s["stage3_sup"])
        lg, ls = c3g.MODEL.POSE_TRANSFER.GAN.LOSS, c3s.MODEL.POSE_TRANSFER.GAN.LOSS
        assert lg.RECON > 0 and lg.ADV_POSE > 0 and lg.SAME_POSE > 0
        assert (lg.ADV_ID > 0) == di
        assert ls.ADV_ID == ls.ADV_POSE == ls.RECON == ls.SAME_POSE == 0.0
        assert lg.VERIF == ls.VERIF > 0  # C_v's loss trains E_I in both arms
        assert c3g.MODEL.POSE_TRANSFER.FREEZE == c3s.MODEL.POSE_TRANSFER.FREEZE == "none"
        assert cfg_of(g["stage2"]).MODEL.POSE_TRANSFER.GAN.LOSS.ADV_ID == 0.0
        assert cfg_of(g["stage2"]).MODEL.POSE_TRANSFER.FREEZE == "encoder"
    # --budget smoke: 64 x 32 (divisible by 32, the pose GAN's requirement) for every stage
    ps = runner.plan(comp, [0], tmp_path, budget="smoke")
    for t in ps["stages"].values():
        assert _opts(t.argv)["INPUT.SIZE_TRAIN"] == "[64,32]"
