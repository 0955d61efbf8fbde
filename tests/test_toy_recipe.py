"""The toy recipe's shipping of a further stage: a DiT trained on a new VLM ships with that VLM."""
from unifusion_core.toy import recipe


def test_ship_vlm_swaps_the_folder_and_keeps_the_training_history(tmp_path, monkeypatch):
    shipped = tmp_path / "models" / "unifusion-toy-vlm"
    shipped.mkdir(parents=True)
    (shipped / "model.safetensors").write_bytes(b"old weights")
    (shipped / "stale.json").write_text("{}")
    (shipped / "train.log").write_text("# stage 1 (from scratch)\nstep 20  0.2 min  loss 4.3\n"
                                       "# stage 2 (--init-from stage 1)\nstep 40  0.4 min  loss 2.0\n")
    run = tmp_path / "runs" / "vlm4"
    (run / "vlm").mkdir(parents=True)
    (run / "vlm" / "model.safetensors").write_bytes(b"new weights")
    (run / "train.log").write_text("Loading weights: 100%\nstep 20  0.3 min  loss 0.1\nsaved runs/vlm4/vlm (step 20)\n")
    monkeypatch.setattr(recipe, "VLM_DIR", shipped)

    recipe._ship_vlm(run / "vlm")

    assert (shipped / "model.safetensors").read_bytes() == b"new weights"
    assert not (shipped / "stale.json").exists()  # the folder is the new one, not a merge
    log = (shipped / "train.log").read_text().splitlines()
    assert log[:4] == ["# stage 1 (from scratch)", "step 20  0.2 min  loss 4.3", "# stage 2 (--init-from stage 1)",
                       "step 40  0.4 min  loss 2.0"]
    assert log[4].startswith("# stage 3 (--init-from stage 2") and log[5:] == ["step 20  0.3 min  loss 0.1",
                                                                              "saved runs/vlm4/vlm (step 20)"]
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["unifusion-toy-vlm"]  # no .new / .old left
