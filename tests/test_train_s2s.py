"""The user's commands, run through subprocesses on a tiny world the test builds itself (a random
codec and speaker encoder, six sentence clips, two dialogues): both training stages, exact resume,
export, the code cache reused, `respond`, and s2s_eval's JSON."""
import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import dialogue_domain as domain
import s2s_batching as sb
from audio_io import save_wav, write_manifest
from checkpoint_io import export_safetensors
from config import Config
from speaker_embeddings import SpeakerEncoder, Voice, VoiceBank
from telugu_codec_fixed import Codec
from telugu_text import cer

torch.set_num_threads(1)
SR = 24000
WORDS = ["నమస్కారం", "మీరు", "ఎలా", "ఉన్నారు", "నా", "పేరు", "లక్ష్మి", "రెండు", "మూడు"]
TINY = ["--config", "tiny", "--set", "s2s.d_model=16", "--set", "s2s.n_layers=1", "--set", "s2s.n_heads=2",
        "--set", "s2s.depth_d_model=16", "--set", "s2s.depth_layers=1", "--set", "s2s.depth_heads=2",
        "--set", "s2s.n_codebooks=2", "--set", "s2s.context_frames=64", "--set", "train_s2s.threads=1",
        "--set", "train_s2s.batch_size=2", "--set", "train_s2s.warmup_steps=1", "--set", "train_s2s.save_every_steps=2",
        "--set", "train_s2s.eval_every_steps=0", "--set", "train_s2s.log_every_steps=1",
        "--stage1_steps", "4", "--stage2_steps", "4", "--val_clips", "2", "--val_dialogues", "1", "--crop_s", "2.0"]


def speechlike(seconds, rng, n=None):
    t = np.arange(n if n is not None else int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * rng.uniform(120, 250) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def timed(words, start, per_word=0.3):
    return [{"word": w, "start": round(start + i * per_word, 3), "end": round(start + (i + 1) * per_word - 0.05, 3)}
            for i, w in enumerate(words)]


def make_sentences(root, rng):
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        rows = []
        for i in range(n):
            words = timed(WORDS[i % 5:i % 5 + 3], 0.1)
            path = root / "wavs" / f"{split}{i}.wav"
            save_wav(path, speechlike(1.1, rng))
            rows.append(dict(audio=str(path.relative_to(root)), text=" ".join(w["word"] for w in words),
                             speaker=f"{split}{i % 2}", lang="te", duration=1.1, split=split, words=words))
        write_manifest(root / f"{split}.jsonl", rows)


def make_dialogues(root, rng):
    """Two dialogues in dialogue_corpus.py's layout; the second has an interruption."""
    rows = []
    for i, voice in enumerate(("lakshmi", "ravi")):
        turns = [domain.sample_turn(random.Random(i * 10 + k), "train") for k in range(2)]
        stereo = np.zeros((int(6.0 * SR), 2), np.float32)
        utterances, turns_out, t = [], [], 0.3
        for k, turn in enumerate(turns):
            u_words, a_words = timed(turn.user_text.split()[:3], t), timed(turn.agent_text.split()[:4], t + 1.2)
            for side, words, kind in ((0, u_words, "request"), (1, a_words, "answer")):
                a, b = int(words[0]["start"] * SR), int(words[-1]["end"] * SR)
                stereo[a:b, side] = speechlike(0, rng, b - a)
                utterances.append({"side": ("user", "agent")[side], "kind": kind, "turn": k,
                                   "text": " ".join(w["word"] for w in words), "start": words[0]["start"],
                                   "end": words[-1]["end"], "words": words, "intent": turn.intent, "slots": turn.slots})
                if i == 1 and k == 0 and kind == "request":  # as dialogue_corpus marks a pause inside a request
                    utterances[-1]["hesitation"] = {"after_words": 1, "pause_s": 0.3}
            turns_out.append({"turn": k, "intent": turn.intent, "slots": turn.slots, "agent_text": turn.agent_text,
                              "user_text": turn.user_text, "interrupted": False})
            t += 2.8
        interruptions = [{"turn": 0, "by_turn": 1, "onset": 2.0, "agent_silent_from": 2.1}] if i else []
        meta = {"id": f"d{i}", "audio": f"d{i}.wav", "agent_voice": voice, "user_voice": "test_f1",
                "turns": turns_out, "utterances": utterances, "interruptions": interruptions}
        sf.write(root / "train" / f"d{i}.wav", stereo, SR, subtype="PCM_16")
        (root / "train" / f"d{i}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        rows.append({"audio": f"train/d{i}.wav", "json": f"train/d{i}.json", "duration": 6.0, "user_dry": None})
    for split in ("train", "heldout_val", "heldout_test"):
        (root / f"dialogues_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cfg = Config()
    cfg.codec.channels, cfg.codec.res_units, cfg.codec.n_codebooks, cfg.codec.codebook_size = [16, 32], 1, 2, 32
    export_safetensors(Codec(cfg.codec).state_dict(), root / "codec.safetensors", cfg, fp16=False)
    cfg.speaker.channels, cfg.speaker.embed_dim = 16, 8
    export_safetensors(SpeakerEncoder(cfg.speaker).eval().state_dict(), root / "spk" / "speaker.safetensors", cfg)
    bank = VoiceBank(encoder="speaker.safetensors")
    for name in ("lakshmi", "priya", "ravi", "kiran"):
        v = rng.standard_normal(8)
        bank.add(Voice(name, "female", "test", [], list(v / np.linalg.norm(v))))
    bank.save(root / "spk" / "voice_bank.json")
    (root / "data" / "dialogues" / "train").mkdir(parents=True)
    make_sentences(root / "data" / "synthetic", rng)
    make_dialogues(root / "data" / "dialogues", rng)
    common = ["--codec_path", str(root / "codec.safetensors"), "--speaker_path", str(root / "spk" / "speaker.safetensors"),
              "--data_dir", str(root / "data" / "synthetic"), "--epochs", "10", *TINY]
    full = train(*common, "--out_dir", str(root / "full"))
    return root, common, full


def train(*args):
    r = subprocess.run([sys.executable, "train_s2s.py", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_two_stages_resume_exactly_reuse_codes_and_export(world):
    root, common, full = world
    out = root / "full"
    assert "0 reused, 2 encoded" in full.stdout  # the first run tokenises the agent channels
    assert (out / "transcribe" / "step_00000004.pt").exists() and (out / "dialogue" / "step_00000004.pt").exists()
    assert list((out / "transcribe" / "tb").glob("events.*")) and (out / "transcribe" / "val.jsonl").exists()
    assert "cer" in json.loads((out / "transcribe" / "val.jsonl").read_text().splitlines()[-1])
    assert "answer_accuracy" in (out / "dialogue" / "val.jsonl").read_text()
    # Exported: fp16 safetensors, the config and the tokenizer beside it, loadable.
    import s2s_transformer
    from safetensors.torch import load_file
    assert all(v.dtype == torch.float16 for v in load_file(out / "s2s.safetensors").values() if v.is_floating_point())
    from safetensors import safe_open
    with safe_open(str(out / "s2s.safetensors"), "pt") as f:  # which codec it was trained with
        assert len(f.metadata()["codec_sha"]) == 16
    model = s2s_transformer.load(out / "s2s.safetensors")
    assert model.cfg.d_model == 16 and model.tokenizer is not None and model.config.codec.codebook_size == 32
    # Any training checkpoint exports the same way (how the shipped demo model is cut from a run).
    train("--codec_path", common[1], "--export_from", str(out / "dialogue" / "step_00000004.pt"),
          "--export_to", str(root / "ship" / "s2s.safetensors"))
    shipped = s2s_transformer.load(root / "ship" / "s2s.safetensors")
    for k, v in shipped.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], msg=k)

    # A run killed after stage-1 step 2: only that checkpoint survives; --resume redoes the rest.
    half = root / "half"
    (half / "transcribe").mkdir(parents=True)
    shutil.copy(out / "transcribe" / "step_00000002.pt", half / "transcribe")
    resumed = train(*common, "--out_dir", str(half), "--resume")
    assert "transcribe: resumed from" in resumed.stdout and "at step 2" in resumed.stdout
    assert "2 reused, 0 encoded" in resumed.stdout  # the agent's codes came from the cache
    for stage in ("transcribe", "dialogue"):
        a, b = weights(out / stage / "step_00000004.pt"), weights(half / stage / "step_00000004.pt")
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=f"{stage}: {k}")


def test_respond_writes_audio_of_the_right_length_and_json(world, tmp_path):
    root = world[0]
    wav = tmp_path / "in.wav"
    sf.write(wav, speechlike(1.0, np.random.default_rng(1))[::3], 8000)  # any rate: 8 kHz here
    r = subprocess.run([sys.executable, "s2s_transformer.py", "respond", str(wav), str(tmp_path / "out.wav"),
                        "--checkpoint", str(root / "full" / "s2s.safetensors"), "--codec", str(root / "codec.safetensors"),
                        "--voice_bank", str(root / "spk" / "voice_bank.json"), "--voice", "ravi",
                        "--seconds_after", "0.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    info = sf.info(tmp_path / "out.wav")
    assert info.samplerate == SR and info.frames == int(1.5 * SR)
    assert out["voice"] == "ravi" and out["frames"] == 38
    for key in ("user_text", "agent_text", "user_pieces", "agent_pieces", "response_gap_ms", "turns", "step_ms"):
        assert key in out
    assert all(set(p) == {"t", "piece"} for p in out["user_pieces"] + out["agent_pieces"])


def test_eval_writes_every_metric(world, tmp_path):
    root = world[0]
    report_path = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "s2s_eval.py", "--checkpoint", str(root / "full" / "s2s.safetensors"),
                        "--codec", str(root / "codec.safetensors"), "--speaker_path", str(root / "spk" / "speaker.safetensors"),
                        "--dialogues", str(root / "data" / "dialogues"),
                        "--sentences", str(root / "data" / "synthetic" / "test.jsonl"), "--json", str(report_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert set(report["per_voice"]) == {"lakshmi", "ravi"}
    for key in ("answer_accuracy", "user_cer", "voice_match", "round_trip_cer", "barge_in_200ms",
                "response_gap_ms_p50", "response_gap_ms_p95", "responded", "talked_over", "step_ms_p50", "frame_ms_p50"):
        assert key in report["all"], key
    talked = report["all"]["talked_over"]
    assert talked is None or 0 <= talked <= 1
    assert report["sampling"]["endpoint_word_prob"] == 0.03 and report["sampling"]["endpoint_quiet_frames"] == 2
    assert report["all"]["turns_scored"] == 4 and report["all"]["step_ms_p50"] > 0
    per_intent = report["per_intent"]  # the same scored turns, split by intent
    assert sum(row["turns"] for row in per_intent.values()) == 4
    assert sum(row["correct"] for row in per_intent.values()) == round(report["all"]["answer_accuracy"] * 4)
    assert all(row["correct"] <= row["turns"] and row["responded"] <= row["turns"] for row in per_intent.values())
    assert 0 <= report["sentence_test_cer"]
    assert "| lakshmi |" in r.stdout and "| all |" in r.stdout
    assert report["all"]["talked_over_pause_n"] <= 1  # ravi's first request has a pause
    r = subprocess.run([sys.executable, "s2s_eval.py", "--checkpoint", str(root / "full" / "s2s.safetensors"),
                        "--codec", str(root / "codec.safetensors"), "--speaker_path", str(root / "spk" / "speaker.safetensors"),
                        "--dialogues", str(root / "data" / "dialogues"), "--with_pauses", "--sentences", "",
                        "--json", str(report_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["with_pauses"] and report["all"]["dialogues"] == 1 and set(report["per_voice"]) == {"ravi"}


def test_transcript_only_listens_with_the_voice_it_is_given(world, tmp_path):
    """--transcript_only reads the clips with an agent voice set, as stage-2 validation does (a
    dialogue-trained model hears little with the zero vector), or with none ('')."""
    root = world[0]
    losses = {}
    for voice in ("ravi", ""):
        r = subprocess.run([sys.executable, "s2s_eval.py", "--transcript_only", "--checkpoint",
                            str(root / "full" / "s2s.safetensors"), "--codec", str(root / "codec.safetensors"),
                            "--voice_bank", str(root / "spk" / "voice_bank.json"), "--listen_voice", voice,
                            "--sentences", str(root / "data" / "synthetic" / "test.jsonl"), "--limit", "2",
                            "--augment", "1"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["listen_voice"] == voice and report["clips"] == 2 and report["cer"] >= 0
        assert report["augment"] == 1
        losses[voice] = report["token_loss"]
    assert losses["ravi"] != losses[""]  # the voice reaches the model


def test_code_cache_shards_and_reuse(tmp_path):
    """Codes split over several memory-mapped shards come back exactly; a second build encodes
    nothing; another codec gets a cache of its own."""
    import train_s2s as ts
    from safetensors.torch import save_file
    codec = tmp_path / "codec.safetensors"
    save_file({"encoder.w": torch.ones(3), "quantizer.c": torch.ones(2), "decoder.w": torch.ones(3)}, str(codec))
    codec.with_suffix(".json").write_text("{}")
    rng = np.random.default_rng(0)
    codes = {f"d{i}": rng.integers(0, 1024, (4, n)) for i, n in enumerate((3, 7, 4, 9))}
    jobs = [(k, lambda k=k: k) for k in codes]
    cache = ts.CodeCache(tmp_path / "cache", codec, shard_frames=5)
    assert cache.build(jobs, lambda k: codes[k]) == (0, 4)
    assert len(list(cache.dir.glob("shard_*.npy"))) == 2  # [3 + 7], [4 + 9] frames
    again = ts.CodeCache(tmp_path / "cache", codec, shard_frames=5)
    assert again.build(jobs, lambda k: 1 / 0) == (4, 0)
    for k, c in codes.items():
        assert np.array_equal(again.get(k), c)
    # A new decoder (train_codec_dac.py --decoder_only) keeps the codes, and the cache with them;
    # a new encoder or quantizer does not.
    save_file({"encoder.w": torch.ones(3), "quantizer.c": torch.ones(2), "decoder.w": torch.zeros(3)}, str(codec))
    assert ts.CodeCache(tmp_path / "cache", codec).dir == cache.dir
    save_file({"encoder.w": torch.ones(3), "quantizer.c": torch.zeros(2), "decoder.w": torch.zeros(3)}, str(codec))
    assert ts.CodeCache(tmp_path / "cache", codec).dir != cache.dir


def test_echo_and_time_box(world):
    """--echo 2 trains twice on each batch (half the batches for the same steps) and the result
    still resumes; --stage1_minutes stops a run with a huge step budget on the clock."""
    root, common, _ = world
    r = train(*common, "--out_dir", str(root / "echo"), "--stage", "transcribe", "--echo", "2")
    state = torch.load(root / "echo" / "transcribe" / "step_00000004.pt", weights_only=True)
    assert state["step"] == 4
    full = torch.load(root / "full" / "transcribe" / "step_00000004.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"]) != (full["epoch"], full["batch_in_epoch"])  # fewer batches read
    r = train(*common, "--out_dir", str(root / "timed"), "--stage", "transcribe", "--stage1_steps", "1000000",
              "--stage1_minutes", "0.02")
    assert "transcribe: done at step" in r.stdout
    assert int(r.stdout.split("transcribe: done at step ")[1].split()[0]) < 1000000


def test_depth_fraction_flag_trains_stage_2(world):
    """--depth_fraction 0.5 runs stage 2 with the depth pass on half the frames, and is recorded."""
    root, common, _ = world
    train(*common, "--out_dir", str(root / "amortised"), "--stage", "dialogue", "--depth_fraction", "0.5")
    state = torch.load(root / "amortised" / "dialogue" / "step_00000004.pt", weights_only=True)
    assert state["step"] == 4 and state["settings"]["depth_fraction"] == 0.5
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_sentence_voice_share_leaves_sentence_items_without_a_voice(world):
    """--sentence_voice_share 0: sentence items carry no agent voice (the collated vector is zero),
    everything else about them unchanged; 1 (the default) gives every item one of the bank's voices;
    a share in between mixes both."""
    import train_s2s as ts
    from telugu_tokenizer import Tokenizer

    root = world[0]
    manifest = root / "data" / "synthetic" / "train.jsonl"
    tok = Tokenizer.load(str(ts.ROOT / "checkpoints" / "telugu_spm.model"))
    voices = np.eye(4, 8, dtype=np.float32)

    def items(share):
        st = sb.StageSettings(sentence_voice_share=share, augment_strength=0.0)
        dset = ts.Sentences(manifest, tok, SR, 960, st, seed=0, voices=voices)
        return [dset[i] for i in range(len(dset))] + [dset.item(0, np.random.default_rng(s)) for s in range(40)]

    with_voice, without, mixed = items(1.0), items(0.0), items(0.5)
    assert all(it["voice"] is not None for it in with_voice)
    assert all(it["voice"] is None for it in without)
    assert 0 < sum(it["voice"] is None for it in mixed) < len(mixed)
    for a, b in zip(with_voice, without):  # the audio and both text streams are the same items
        assert np.array_equal(a["user"], b["user"]) and np.array_equal(a["user_text"], b["user_text"])
    batch = sb.collate(without[:2], np.zeros(8, np.int64), 8)
    assert torch.count_nonzero(batch["voice"]) == 0


def test_text_dialogues_time_fresh_training_plans_and_train_with_text_share(world):
    """TextDialogues lays a training-split dialogue plan out in frames: the user's words in order,
    each answer after its request and before the next, the user's audio silent and only the agent
    text to learn. --text_share mixes such items into stage 2 and validation scores answering
    alone on held-out text dialogues (s2s_eval.text_answers)."""
    import dialogue_corpus
    import train_s2s as ts
    from telugu_tokenizer import Tokenizer

    root, common, _ = world
    tok = Tokenizer.load(str(ts.ROOT / "checkpoints" / "telugu_spm.model"))
    bank = VoiceBank.load(root / "spk" / "voice_bank.json")
    texts = sb.TextDialogues(tok, SR, 960, sb.StageSettings(crop_s=4.0), 0, bank, 3)
    for i in range(4):
        spec = dialogue_corpus.plan_dialogue("train", i, augment=False)
        assert not any(t["heldout"] for t in spec["turns"])
        line = texts.timeline(spec, np.random.default_rng(i))
        said = [tok.decode([int(x)]) for x in line["user_text"] if x]
        words = [w.strip(sb._PUNCT) for t in spec["turns"] for w in t["user_text"].split()]
        assert cer([" ".join(words)], [tok.decode([int(x) for x in line["user_text"] if x])]) == 0, said
        agent_frames = np.flatnonzero(line["agent_text"])
        for k, turn in enumerate(line["turns"]):
            stop = line["turns"][k + 1]["start"] if k + 1 < len(line["turns"]) else len(line["agent_text"])
            inside = agent_frames[(agent_frames >= turn["start"]) & (agent_frames < stop)]
            assert len(inside) and inside.min() >= turn["end"] - 1  # the answer starts after the request
        assert len(line["turns"]) == len(spec["turns"]) and line["voice"] == spec["agent_voice"]
    item = texts[0]
    assert item["text_only"] and not item["user"].any() and len(item["user_text"]) == 100
    assert item["agent_codes"] is None and item["voice"].shape == (8,)
    assert item["clock"].sum() == 7  # the plan's moment, which its time and date answers were written for
    train(*common, "--out_dir", str(root / "texts"), "--stage", "dialogue", "--text_share", "0.5")
    state = torch.load(root / "texts" / "dialogue" / "step_00000004.pt", weights_only=True)
    assert state["settings"]["text_share"] == 0.5
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    rows = [json.loads(line) for line in (root / "texts" / "dialogue" / "val.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["text_answer_accuracy"] <= 1
    assert 0 <= rows[-1]["forced_turn_acc"] <= rows[-1]["forced_first_token_acc"] <= 1
    assert rows[-1]["forced_content_nll"] > 0
    assert 0 < rows[-1]["forced_turn_ceiling"] <= rows[-1]["forced_first_token_ceiling"] <= 1


@pytest.mark.parametrize("kind", ["latent", "codes"])
def test_batch_user_input_runs_the_codec_once_for_silent_rows(kind):
    cfg = Config()
    cfg.codec.channels, cfg.codec.res_units, cfg.codec.n_codebooks, cfg.codec.codebook_size = [16, 32], 1, 2, 32
    torch.manual_seed(0)
    codec = Codec(cfg.codec).eval()
    pcm = torch.zeros(3, 1, 6 * cfg.codec.frame_size)
    pcm[1] = 0.1 * torch.randn(1, 6 * cfg.codec.frame_size)
    batch = {"user": pcm, "text_only": torch.tensor([True, False, True])}
    whole = sb.user_input(pcm, kind, codec, 2)
    got = sb.batch_user_input(batch, kind, codec, 2)
    # the whole batch's numbers (up to float summation order, which depends on the batch size)
    assert got.shape == whole.shape and torch.allclose(got.float(), whole.float(), atol=1e-5)
    assert torch.equal(got[0], got[2])
    del batch["text_only"]
    assert torch.equal(sb.batch_user_input(batch, kind, codec, 2), whole)


def test_text_word_dropout_keeps_slot_words():
    texts = sb.TextDialogues(None, SR, 960, sb.StageSettings(text_word_dropout=0.5), 0, VoiceBank())
    turn = {"intent": "add", "slots": {"a": 23, "b": 5}, "user_text": "ఇరవై మూడు ప్లస్ ఐదు కలిపితే ఎంత వస్తుంది"}
    rng, seen = np.random.default_rng(0), set()
    for _ in range(50):
        said = texts.request_words(turn, rng).split()
        assert said[:2] == ["ఇరవై", "మూడు"] and "ఐదు" in said  # the numbers always stay
        assert 2 * len(said) >= 7 and set(said) <= set(turn["user_text"].split())
        seen.add(len(said))
    assert len(seen) > 1  # words were dropped, not always the same count
    plain = sb.TextDialogues(None, SR, 960, sb.StageSettings(), 0, VoiceBank())
    assert plain.request_words(turn, rng) == turn["user_text"]


def test_window_note_warns_when_streaming_would_see_more_than_training_did():
    import train_s2s as ts
    assert ts.window_note(10.0, 25.0, 250) is None and ts.window_note(16.0, 25.0, 250) is None
    note = ts.window_note(10.0, 25.0, 750)
    assert "250 frames" in note and "--crop_s 30" in note and "s2s.context_frames=250" in note


def test_text_dialogues_keep_the_pause_inside_a_request():
    """A planned pause inside a request (dialogue_corpus.HESITATION) moves the request's later
    words, and its answer, later in the text timeline as it does in the rendered corpus."""
    import copy

    import dialogue_corpus
    import train_s2s as ts
    from speaker_embeddings import Voice
    from telugu_tokenizer import Tokenizer

    tok = Tokenizer.load(str(ts.ROOT / "checkpoints" / "telugu_spm.model"))
    bank = VoiceBank()
    bank.add(Voice("lakshmi", "female", "test", [], [0.0] * 8))
    texts = sb.TextDialogues(tok, SR, 960, sb.StageSettings(), 0, bank)
    spec = next(s for s in (dialogue_corpus.plan_dialogue("train", i, augment=False) for i in range(100))
                if s["turns"][0]["hesitation"])
    plain = copy.deepcopy(spec)
    plain["turns"][0]["hesitation"] = None
    a, b = texts.timeline(spec, np.random.default_rng(0)), texts.timeline(plain, np.random.default_rng(0))
    pause = spec["turns"][0]["hesitation"]["pause_s"] * 25  # frames
    ua, ub = np.flatnonzero(a["user_text"]), np.flatnonzero(b["user_text"])
    assert len(ua) == len(ub) and ua[0] == ub[0]
    assert abs((ua[-1] - ub[-1]) - pause) <= 1.5  # the last word came a pause later
    assert abs((a["turns"][0]["end"] - b["turns"][0]["end"]) - pause) <= 1.5
    assert a["turns"][0]["start"] == b["turns"][0]["start"]
    first_answer = lambda line: np.flatnonzero(line["agent_text"])[0]
    assert abs((first_answer(a) - first_answer(b)) - pause) <= 1.5


def test_eval_summary_counts_talking_over_a_pause_apart():
    import s2s_eval

    turn = lambda over, pause: {"scored": True, "correct": False, "gap_ms": 200, "talked_over": over, "hesitation": pause}
    result = {"turns": [turn(True, True), turn(False, True), turn(False, True), turn(True, False), turn(None, False),
                        turn(False, False)],
              "barge_in": [], "step_ms": [5.0], "frame_ms": [8.0], "user_ref": "ab", "user_hyp": "ab"}
    s = s2s_eval.summarise([result])
    assert s["talked_over"] == 0.4  # 2 of the 5 requests it could talk over
    assert s["talked_over_pause"] == round(1 / 3, 4) and s["talked_over_pause_n"] == 3
    old = {**result, "turns": [{k: v for k, v in t.items() if k != "hesitation"} for t in result["turns"]]}
    assert s2s_eval.summarise([old])["talked_over_pause"] is None  # a corpus without pauses


def test_augment_clips_are_seeded_per_clip_and_keep_words_in_step():
    """s2s_eval --transcript_only --augment: every model hears the same augmented clips (seeded per
    clip), the audio really changes, and words follow a tempo change."""
    import s2s_eval
    sr = 24000
    rng = np.random.default_rng(3)
    clips = [{"pcm": (0.1 * rng.standard_normal(sr)).astype(np.float32), "ref": "a b",
              "words": [{"word": "a", "start": 0.1, "end": 0.4}, {"word": "b", "start": 0.5, "end": 0.9}],
              "speaker": "x"} for _ in range(6)]
    a = s2s_eval.augment_clips(clips, sr, 1.0, seed=5)
    b = s2s_eval.augment_clips(clips, sr, 1.0, seed=5)
    c = s2s_eval.augment_clips(clips, sr, 1.0, seed=6)
    assert all(np.array_equal(x["pcm"], y["pcm"]) and x["words"] == y["words"] for x, y in zip(a, b))
    assert any(not np.array_equal(x["pcm"], y["pcm"]) for x, y in zip(a, c))
    assert any(not np.array_equal(x["pcm"], o["pcm"]) for x, o in zip(a, clips))
    for x in a:  # words keep their order and stay inside the (possibly stretched) audio
        ends = [w["end"] for w in x["words"]]
        assert ends == sorted(ends) and ends[-1] <= len(x["pcm"]) / sr + 1e-3
    assert clips[0]["words"][0]["end"] == 0.4  # the originals are untouched


def test_wording_ceilings_follow_the_reply_wordings():
    """text_forced's ceilings: the reply is drawn among the intent's wordings, so a model that
    always gives one of them scores at most its share; wordings that share a first word raise
    only the first token's ceiling."""
    import s2s_eval
    from telugu_tokenizer import Tokenizer
    tok = Tokenizer.load()
    assert s2s_eval.wording_ceilings("thanks", {}, tok) == (1 / 3, 1 / 3)  # three wordings, three first words
    first, whole = s2s_eval.wording_ceilings("stop", {}, tok)  # "సరే." and "సరే, ఆపేస్తున్నాను."
    assert first == 1.0 and whole == 0.5
