"""The S2S transformer and its tokenizer: streaming equals teacher forcing, the KV-cache window,
delays, training signal, sampling, checkpoints; tokenizer round trip and frame alignment."""
import math
import statistics
import time

import pytest
import torch

import s2s_transformer as s2s
from checkpoint_io import export_safetensors
from config import Config
from telugu_tokenizer import PAD_ID, Tokenizer, normalize

torch.set_num_threads(1)

TELUGU = [
    "నమస్కారం, మీరు ఎలా ఉన్నారు?",
    "నా పేరు లక్ష్మి.",
    "ఈ రోజు సోమవారం.",
    "హైదరాబాద్ తెలంగాణ రాజధాని.",
    "రెండు మరియు మూడు కలిపితే ఐదు.",
    "దయచేసి మళ్ళీ చెప్పండి.",
    "ధన్యవాదాలు, మళ్ళీ కలుద్దాం.",
    "విజయవాడ ఆంధ్రప్రదేశ్ లో ఉంది.",
    "ఇప్పుడు సమయం ఎంత?",
    "నేను తెలుగు మాట్లాడతాను.",
]


def tiny_config(user_input="mel", context_frames=64, n_layers=2, delay=1, K=3) -> Config:
    cfg = Config()
    cfg.codec.codebook_size = 16
    s = cfg.s2s
    s.d_model, s.n_layers, s.n_heads = 32, n_layers, 2
    s.depth_d_model, s.depth_layers, s.depth_heads = 24, 2, 2
    s.n_codebooks, s.acoustic_delay, s.context_frames = K, delay, context_frames
    s.user_input, s.text_vocab_size, s.dropout = user_input, 20, 0.0
    return cfg


def random_batch(cfg: Config, B: int, T: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    s, card = cfg.s2s, cfg.codec.codebook_size
    if s.user_input == "mel":
        user = 0.1 * torch.randn(B, 1, T * cfg.codec.frame_size, generator=g)
    elif s.user_input == "latent":
        user = torch.randn(B, cfg.codec.latent_dim, T, generator=g)
    else:
        user = torch.randint(0, card, (B, cfg.codec.n_codebooks, T), generator=g)
    return {
        "user": user,
        "agent_codes": torch.randint(0, card, (B, s.n_codebooks, T), generator=g),
        "agent_text": torch.randint(0, s.text_vocab_size, (B, T), generator=g),
        "user_text": torch.randint(0, s.text_vocab_size, (B, T), generator=g),
        "voice": torch.randn(B, cfg.speaker.embed_dim, generator=g),
    }


def user_frame(cfg, batch, t):
    u = batch["user"][0]
    if cfg.s2s.user_input == "mel":
        fs = cfg.codec.frame_size
        return u[0, t * fs:(t + 1) * fs]
    return u[:, t]


def stream_teacher_forced(model, cfg, batch):
    """Step through batch 0 forcing every token; returns the per-step logits."""
    gen = model.streaming(voice=batch["voice"][0], temperature=0.0)
    T = batch["agent_text"].shape[1]
    outs = []
    for t in range(T):
        outs.append(gen.step(user_frame(cfg, batch, t), agent_text=int(batch["agent_text"][0, t]),
                             agent_codes=batch["agent_codes"][0, :, t], user_text=int(batch["user_text"][0, t])))
    return gen, outs


def assert_stream_matches(outs, full, steps):
    for t in steps:
        o = outs[t]
        torch.testing.assert_close(o.logits["user_text"], full["user_text"][0, t], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(o.logits["agent_text"], full["agent_text"][0, t], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(o.logits["agent_codes"], full["agent_codes"][0, :, t], atol=2e-4, rtol=1e-4)


# (1) streaming with teacher forcing == full forward, every stream and depth step ------------------
@pytest.mark.parametrize("user_input", ["mel", "latent", "codes"])
def test_streaming_matches_forward(user_input):
    torch.manual_seed(0)
    cfg = tiny_config(user_input)
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, 10)
    with torch.no_grad():
        full = model(batch)
    gen, outs = stream_teacher_forced(model, cfg, batch)
    assert_stream_matches(outs, full, range(10))
    # The complete agent frames come out `delay` steps late, exactly the forced ones.
    assert outs[0].agent_codes is None
    for t in range(1, 10):
        assert torch.equal(outs[t].agent_codes, batch["agent_codes"][0, :, t - 1])



def test_clock_conditions_every_frame_in_streaming_as_in_forward():
    """The clock (cfg.clock): one-hot fields of "now", added to every frame; a generator told the
    same moment steps exactly as the forward pass on the batch's clock, another moment changes
    the output, and weights saved before the clock existed load as a zero clock (the same model)."""
    import datetime as dt
    now = dt.datetime(2024, 3, 9, 17, 45)
    x = s2s.clock_features(now)
    assert x.shape == (s2s.CLOCK_DIM,) and x.sum() == 7 and x[0] == 1
    assert torch.equal(x, s2s.clock_features("2024-03-09T17:45")) and s2s.clock_features(None).sum() == 0
    assert not torch.equal(x, s2s.clock_features(now + dt.timedelta(minutes=1)))
    torch.manual_seed(5)
    cfg = tiny_config("latent")
    old = s2s.S2SModel(cfg).eval()
    cfg.s2s.clock = True
    model = s2s.S2SModel(cfg).eval()
    model.load_state_dict(s2s.fill_missing_clock(model, old.state_dict()), strict=True)
    batch = random_batch(cfg, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["agent_text"], old(batch)["agent_text"])  # a zero clock
        torch.nn.init.normal_(model.clock_in.weight)
        full = model(dict(batch, clock=x[None]))
        unknown = model(dict(batch, clock=s2s.clock_features(None)[None]))
        assert not torch.allclose(full["agent_text"], unknown["agent_text"])
    gen = model.streaming(voice=batch["voice"][0], temperature=0.0, now=now)
    outs = [gen.step(user_frame(cfg, batch, t), agent_text=int(batch["agent_text"][0, t]),
                     agent_codes=batch["agent_codes"][0, :, t], user_text=int(batch["user_text"][0, t]))
            for t in range(8)]
    assert_stream_matches(outs, full, range(8))
    gen.set_now(now + dt.timedelta(hours=3))
    moved = gen.step(user_frame(cfg, batch, 0))
    gen.reset()
    gen.set_now(now)
    assert not torch.allclose(moved.logits["agent_text"], outs[0].logits["agent_text"])


# (2) the sliding KV-cache window ------------------------------------------------------------------
def test_kv_cache_window_slides():
    torch.manual_seed(1)
    W, N = 8, 21
    cfg = tiny_config("codes", context_frames=W)
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, N)
    with torch.no_grad():
        full = model(batch)  # the training path, whose mask limits every position to W frames
    gen, outs = stream_teacher_forced(model, cfg, batch)
    assert_stream_matches(outs, full, range(N))  # before and long after the window filled
    # Memory does not grow: same buffers, W keys attended.
    assert all(c.length == W and c.k.shape[2] == W for c in gen.caches)


def test_last_step_equals_forward_over_last_window():
    """With one layer nothing older than the window reaches the output, so the stream's last step
    equals a forward over only the last frames at the same absolute RoPE positions. (With more
    layers information older than W still flows up through lower layers, as in any
    sliding-window transformer: the exact statement is the test above.)"""
    torch.manual_seed(2)
    W, N = 8, 30
    cfg = tiny_config("latent", context_frames=W, n_layers=1)
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, N)
    _, outs = stream_teacher_forced(model, cfg, batch)
    # The window's first step reads the tokens of the step before, and the delayed codebooks
    # those of `delay` frames earlier still: start that much before the window.
    start = N - W - 1 - cfg.s2s.acoustic_delay
    window = {k: (v[..., start:] if k != "voice" else v) for k, v in batch.items()}
    with torch.no_grad():
        part = model(window, start_frame=start)
    torch.testing.assert_close(outs[-1].logits["agent_text"], part["agent_text"][0, -1], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(outs[-1].logits["agent_codes"], part["agent_codes"][0, :, -1], atol=2e-4, rtol=1e-4)


def test_step_time_does_not_grow():
    torch.manual_seed(3)
    W = 64
    cfg = tiny_config("codes", context_frames=W)
    model = s2s.S2SModel(cfg).eval()
    gen = model.streaming(temperature=0.0)
    frame = torch.zeros(cfg.s2s.n_codebooks, dtype=torch.long)
    buffers = [c.k.data_ptr() for c in gen.caches]

    def timed(n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            gen.step(frame)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    timed(W)  # fill the cache
    early = timed(40)
    for _ in range(3 * W):
        gen.step(frame)
    late = timed(40)
    assert late < 2.5 * early, (early, late)
    assert [c.k.data_ptr() for c in gen.caches] == buffers
    assert gen.caches[0].length == W and gen.step_index == 4 * W + 80


# (3) delay helpers -----------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 1, 2])
def test_delay_round_trip(delay):
    codes = torch.randint(0, 16, (2, 4, 9))
    delayed = s2s.apply_delay(codes, delay, fill=16)
    assert torch.equal(delayed[:, 0], codes[:, 0])
    assert (delayed[:, 1:, :delay] == 16).all()
    back = s2s.undo_delay(delayed, delay, fill=16)
    T = codes.shape[-1]
    assert torch.equal(back[..., :T - delay], codes[..., :T - delay])
    # Lossless when the caller pads T by `delay` frames.
    padded = torch.cat([codes, torch.zeros(2, 4, delay, dtype=codes.dtype)], dim=-1)
    assert torch.equal(s2s.undo_delay(s2s.apply_delay(padded, delay, 16), delay, 16)[..., :T], codes)


# (4) the loss trains ---------------------------------------------------------------------------
def test_loss_finite_and_overfits():
    torch.manual_seed(4)
    cfg = tiny_config("mel")
    model = s2s.S2SModel(cfg)
    batch = random_batch(cfg, 2, 12)
    batch["agent_text"][:, ::2] = PAD_ID
    batch["mask"] = torch.ones(2, 12, dtype=torch.bool)
    batch["mask"][1, 9:] = False
    total, parts = model.loss(batch)
    assert torch.isfinite(total)
    assert set(parts) == {"agent_text", "user_text"} | {f"codebook_{k}" for k in range(cfg.s2s.n_codebooks)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(total.detach())
    for _ in range(30):
        total, _ = model.loss(batch)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.5 * first, (first, float(total.detach()))
    # Transcription-only weights leave only the user-text stream in the total.
    t, p = model.loss(batch, {"agent_text": 0, "codebook_0": 0, "codebooks": 0})
    torch.testing.assert_close(t, p["user_text"])
    assert set(p) == {"agent_text", "user_text"}  # the depth transformer was skipped


def test_depth_fraction_trains_the_depth_pass_on_a_random_share_of_frames():
    torch.manual_seed(14)
    cfg = tiny_config("latent")
    model = s2s.S2SModel(cfg).eval()  # no dropout: the two passes must agree
    batch = random_batch(cfg, 2, 12)
    batch["mask"] = torch.ones(2, 12, dtype=torch.bool)
    batch["mask"][1, 8:] = False
    _, full = model.loss(batch)
    # Every frame, in a random order: the same losses as the dense pass.
    _, shuffled = model.loss(batch, depth_fraction=0.999)  # round(0.999 * 24) = 24 frames
    for k in full:
        torch.testing.assert_close(shuffled[k], full[k])
    # A quarter of the frames: the depth transformer sees 6 of the 24, the text streams all.
    seen = []
    hook = model.depth.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    total, part = model.loss(batch, depth_fraction=0.25)
    hook.remove()
    assert seen == [6] and torch.isfinite(total)
    torch.testing.assert_close(part["agent_text"], full["agent_text"])
    assert not torch.equal(part["codebook_0"], full["codebook_0"])
    total.backward()
    assert model.code_heads.grad is not None and model.code_heads.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="depth_fraction"):
        model.loss(batch, depth_fraction=0.0)


def test_text_only_rows_train_the_agent_text_alone():
    """A text-only row (s2s_batching.TextDialogues) adds to the agent-text loss only: the user
    transcript and codes it carries count for nothing, the depth pass runs on the other rows'
    frames, and those rows' user-text and code losses are what they are without it."""
    torch.manual_seed(3)
    cfg = tiny_config("latent")
    V, card = cfg.s2s.text_vocab_size, cfg.codec.codebook_size
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 3, 10)
    batch["text_only"] = torch.tensor([False, True, False])
    _, base = model.loss(batch)
    other = dict(batch, user_text=batch["user_text"].clone(), agent_codes=batch["agent_codes"].clone(),
                 agent_text=batch["agent_text"].clone())
    other["user_text"][1] = (other["user_text"][1] + 1) % V
    other["agent_codes"][1] = (other["agent_codes"][1] + 1) % card
    _, same = model.loss(other)
    for k in base:
        if k != "agent_text":  # row 1 reads its own (changed) streams back, so its agent text moves
            torch.testing.assert_close(same[k], base[k])
    other["agent_text"][1] = (other["agent_text"][1] + 1) % V
    _, moved = model.loss(other)
    assert not torch.allclose(moved["agent_text"], same["agent_text"])
    alone = {k: v[[0, 2]] for k, v in batch.items() if k != "text_only"}
    _, without = model.loss(alone)
    for k in base:
        if k != "agent_text":
            torch.testing.assert_close(base[k], without[k])
    seen = []
    hook = model.depth.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    model.loss(batch, depth_fraction=0.5)
    batch["text_only"][:] = True  # nothing but text: no depth pass, no code losses
    _, texts = model.loss(batch)
    hook.remove()
    assert seen == [10] and set(texts) == {"agent_text", "user_text"} and texts["user_text"] == 0


def test_user_text_noise_hides_the_transcript_read_back_in_training_only():
    cfg = tiny_config("latent")
    cfg.s2s.user_text_noise = 1.0  # every token read back is replaced
    model = s2s.S2SModel(cfg)
    a = random_batch(cfg, 2, 10)
    b = dict(a, user_text=torch.randint(0, cfg.s2s.text_vocab_size, (2, 10), generator=torch.Generator().manual_seed(9)))
    outs = []
    for batch in (a, b):
        torch.manual_seed(0)  # the same noise and dropout draws for both
        outs.append(model(batch, depth=False)["agent_text"])
    torch.testing.assert_close(outs[0], outs[1])  # the transcript read back no longer matters
    model.eval()  # inference reads the transcript as it is
    assert not torch.allclose(model(a, depth=False)["agent_text"], model(b, depth=False)["agent_text"])


# (5) sampling ------------------------------------------------------------------------------------
def test_top_k_one_equals_greedy():
    torch.manual_seed(5)
    cfg = tiny_config("latent")
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, 8)
    runs = []
    for temperature, top_k, seed in ((0.0, 0, None), (0.9, 1, 1), (1.5, 1, 2)):
        gen = model.streaming(temperature=temperature, top_k=top_k, seed=seed)
        outs = [gen.step(user_frame(cfg, batch, t)) for t in range(8)]
        runs.append([(o.agent_text_id, o.user_text_id, None if o.agent_codes is None else o.agent_codes.tolist())
                     for o in outs])
    assert runs[0] == runs[1] == runs[2]
    # Same seed, same conversation; reset() starts it over.
    gen = model.streaming(temperature=1.0, top_k=5, seed=7)
    a = [gen.step(user_frame(cfg, batch, t)).agent_text_id for t in range(8)]
    gen.reset()
    b = [gen.step(user_frame(cfg, batch, t)).agent_text_id for t in range(8)]
    assert a == b


def test_text_and_audio_sample_separately():
    torch.manual_seed(15)
    cfg = tiny_config("latent")
    cfg.s2s.temperature, cfg.s2s.top_k, cfg.s2s.text_temperature, cfg.s2s.text_top_k = 0.9, 40, 0.6, 20
    model = s2s.S2SModel(cfg).eval()
    gen = model.streaming()
    assert (gen.temperature, gen.top_k, gen.text_temperature, gen.text_top_k) == (0.9, 40, 0.6, 20)
    gen = model.streaming(temperature=0.0, top_k=0)  # one explicit setting drives both streams
    assert (gen.text_temperature, gen.text_top_k) == (0.0, 0)
    gen = model.streaming(temperature=1.2, text_temperature=0.0)
    assert (gen.temperature, gen.text_temperature) == (1.2, 0.0)
    # Greedy text with hot audio: the text equals the fully greedy run's while the codes are
    # forced to the same values, since only the codes are then left to chance.
    batch = random_batch(cfg, 1, 8)
    texts = []
    for kw in ({"temperature": 0.0}, {"temperature": 5.0, "top_k": 0, "text_temperature": 0.0, "seed": 3}):
        g = model.streaming(**kw)
        texts.append([g.step(user_frame(cfg, batch, t), agent_codes=batch["agent_codes"][0, :, t]).agent_text_id
                      for t in range(8)])
    assert texts[0] == texts[1]


def test_silence_forces_pad_and_silence_codes():
    torch.manual_seed(6)
    cfg = tiny_config("codes")
    model = s2s.S2SModel(cfg).eval()

    class FakeCodec:  # the generator only needs encode(), init_state() and its device from it
        frame_size, sample_rate = cfg.codec.frame_size, cfg.codec.sample_rate

        def parameters(self):
            return iter([torch.zeros(1)])

        def encode(self, pcm, n_q):
            return torch.full((1, n_q, pcm.shape[-1] // self.frame_size), 5)

        def init_state(self, batch, device=None):
            return {}

    gen = model.streaming(temperature=1.0, top_k=0, seed=0, codec=FakeCodec())
    frame = torch.zeros(cfg.s2s.n_codebooks, dtype=torch.long)
    for _ in range(3):
        gen.step(frame)
    gen.silence(4)
    outs = [gen.step(frame) for _ in range(5)]
    assert all(o.agent_text_id == PAD_ID for o in outs[:4])
    # Frames 3..6 are silent; each is complete one step later (delay 1).
    for o in outs[1:5]:
        assert o.agent_codes.tolist() == [5] * cfg.s2s.n_codebooks


def test_silence_codes_are_the_codecs_steady_state_for_silence():
    """What the generator forces for a quiet agent must be what the agent channel of a training
    dialogue holds in a long silence: the shipped codec takes about a second of zeros to settle,
    and its first frames give other codes (a start-up transient the model never hears as silence)."""
    import s2s_eval
    import telugu_codec_fixed
    codec = telugu_codec_fixed.load(None)
    offline = codec.encode(torch.zeros(1, 1, 6 * codec.sample_rate))[0]  # [K, 150 frames]
    steady = s2s.steady_silence_codes(codec)
    assert steady.tolist() == offline[:, -1].tolist() == offline[:, 100].tolist()
    assert offline[:, 5].tolist() != steady.tolist()  # the transient
    assert s2s_eval.silence_codes_of(codec).tolist() == steady.tolist()
    assert s2s.steady_silence_codes(codec, 3).tolist() == steady[:3].tolist()


# (6) tokenizer -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer.train(TELUGU, tmp_path_factory.mktemp("spm") / "te.model", vocab_size=120)


def test_tokenizer_round_trip(tokenizer):
    assert tokenizer.pad_id == PAD_ID == 0
    for s in TELUGU:
        ids = tokenizer.encode(s)
        assert PAD_ID not in ids and tokenizer.unk_id not in ids
        assert tokenizer.decode(ids) == normalize(s)
        assert "".join(tokenizer.piece(i) for i in ids).strip() == normalize(s)
    assert tokenizer.decode([PAD_ID, *tokenizer.encode(TELUGU[0]), PAD_ID]) == normalize(TELUGU[0])


def test_align_words_after_word_end_with_lag(tokenizer):
    words = [{"word": "నమస్కారం", "start": 0.10, "end": 0.52},
             {"word": "మీరు", "start": 0.56, "end": 0.60},  # short word: tokens spill over
             {"word": "ఎలా", "start": 0.61, "end": 0.80}]
    fr, lag, n = 25, 2, 60
    stream = tokenizer.align_words(words, n, fr, lag)
    assert len(stream) == n
    tokens = [t for t in stream if t != PAD_ID]
    assert tokens == [i for w in words for i in tokenizer.encode(w["word"])]  # nothing dropped
    assert tokenizer.decode(stream) == "నమస్కారం మీరు ఎలా"
    first = next(i for i, t in enumerate(stream) if t != PAD_ID)
    assert first == 13 + lag  # ceil(0.52 * 25) = 13: the first frame after the word ended
    pos = 0
    for w in words:  # every word starts no earlier than its end + lag
        n_ids = len(tokenizer.encode(w["word"]))
        while stream[pos] == PAD_ID:
            pos += 1
        assert pos >= math.ceil(w["end"] * fr) + lag
        pos += n_ids
    # The agent's monologue leads its speech: anchored on the word start.
    agent = tokenizer.align_words(words, n, fr, lag_frames=-1, anchor="start")
    assert next(i for i, t in enumerate(agent) if t != PAD_ID) == 1  # floor(0.10 * 25) - 1
    with pytest.raises(ValueError, match="frames"):
        tokenizer.align_words(words, 18, fr, lag)


def test_shipped_tokenizer_if_present():
    try:
        tok = Tokenizer.load()
    except FileNotFoundError:
        pytest.skip("no shipped tokenizer yet")
    assert 200 <= tok.vocab_size <= 1000
    for s in TELUGU[1:]:
        assert tok.decode(tok.encode(s)) == normalize(s)


# (7) checkpoints -------------------------------------------------------------------------------
def test_save_load_identical(tmp_path):
    torch.manual_seed(7)
    cfg = tiny_config("mel")
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, 6)
    path = tmp_path / "s2s.safetensors"
    export_safetensors(model.state_dict(), path, model.config, fp16=False)
    loaded = s2s.load(path)
    assert not loaded.training
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ga, gb = model.streaming(temperature=0.8, seed=3), loaded.streaming(temperature=0.8, seed=3)
    for t in range(6):
        oa, ob = ga.step(user_frame(cfg, batch, t)), gb.step(user_frame(cfg, batch, t))
        assert oa.agent_text_id == ob.agent_text_id and torch.equal(oa.logits["agent_codes"], ob.logits["agent_codes"])
    with pytest.raises(FileNotFoundError, match="not found"):
        s2s.load(tmp_path / "missing.safetensors")


def test_unset_vocab_is_a_clear_error():
    cfg = tiny_config()
    cfg.s2s.text_vocab_size = 0
    with pytest.raises(ValueError, match="text_vocab_size"):
        s2s.S2SModel(cfg)


def test_pcm_frames_through_the_codec():
    """Given the codec, the generator takes raw pcm for every user_input kind and runs the codec's
    streaming encoder itself; that matches a forward on the codec's offline latent and codes."""
    import telugu_codec_fixed

    torch.manual_seed(8)
    for kind in ("latent", "codes"):
        cfg = tiny_config(kind)
        cfg.codec.channels, cfg.codec.res_units = [16, 32], 1
        codec = telugu_codec_fixed.Codec(cfg.codec).eval()
        model = s2s.S2SModel(cfg).eval()
        T, fs = 5, cfg.codec.frame_size
        pcm = 0.1 * torch.randn(1, 1, T * fs)
        batch = random_batch(cfg, 1, T)
        with torch.no_grad():
            batch["user"] = codec.latent(pcm) if kind == "latent" else codec.encode(pcm)
            full = model(batch)
        gen = model.streaming(voice=batch["voice"][0], temperature=0.0, codec=codec)
        outs = [gen.step(pcm[0, 0, t * fs:(t + 1) * fs], agent_text=int(batch["agent_text"][0, t]),
                         agent_codes=batch["agent_codes"][0, :, t], user_text=int(batch["user_text"][0, t]))
                for t in range(T)]
        assert_stream_matches(outs, full, range(T))
        assert gen.silence_codes.shape == (cfg.s2s.n_codebooks,)


def test_pcm_frames_through_the_ear():
    """user_input "ear": the generator runs the frozen ear on pcm frames, which matches a forward on
    the ear's offline features, and it keeps what the ear heard (text piece, speech probability)."""
    import telugu_asr

    torch.manual_seed(9)
    cfg = tiny_config("ear")
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads = 32, 1, 2
    cfg.s2s.ear_dim = cfg.asr.d_model
    ear = telugu_asr.Ear(cfg).eval()
    model = s2s.S2SModel(cfg).eval()
    T, fs = 6, cfg.codec.frame_size
    pcm = 0.1 * torch.randn(1, T * fs)
    batch = random_batch(cfg, 1, T)
    with torch.no_grad():
        batch["user"] = ear(pcm)[2].transpose(1, 2)
        full = model(batch)
    gen = model.streaming(voice=batch["voice"][0], temperature=0.0, ear=ear)
    outs = [gen.step(pcm[0, t * fs:(t + 1) * fs], agent_text=int(batch["agent_text"][0, t]),
                     agent_codes=batch["agent_codes"][0, :, t], user_text=int(batch["user_text"][0, t]))
            for t in range(T)]
    assert_stream_matches(outs, full, range(T))
    assert isinstance(gen.ear_heard[0], str) and 0.0 <= gen.ear_heard[1] <= 1.0
    with pytest.raises(ValueError, match="needs the ear"):
        model.streaming(temperature=0.0).step(pcm[0, :fs])
    cfg.s2s.ear_dim = 0
    with pytest.raises(ValueError, match="ear_dim"):
        s2s.S2SModel(cfg)


def test_sample_text_draws_timing_then_content():
    # PAD carries 60 % of the mass; of the words, id 5 is likeliest but holds less mass than the
    # rest together, so one draw over everything would mostly pick another word.
    V = 40
    logits = torch.full((V,), -30.0)
    probs = torch.zeros(V)
    probs[PAD_ID] = 0.6
    probs[5] = 0.1
    rest = [i for i in range(V) if i not in (PAD_ID, 5)][:10]
    probs[rest] = 0.03
    logits = torch.where(probs > 0, probs.clamp(min=1e-9).log(), logits)
    g = torch.Generator().manual_seed(0)
    draws = [s2s.sample_text(logits, 1.0, 0, 0.0, PAD_ID, g) for _ in range(2000)]
    pads = sum(d == PAD_ID for d in draws) / len(draws)
    assert abs(pads - 0.6) < 0.05  # timing keeps its probability
    assert set(draws) == {PAD_ID, 5}  # content is the likeliest word
    one = [s2s.sample_text(logits, 1.0, 0, -1.0, PAD_ID, g) for _ in range(2000)]
    assert sum(d not in (PAD_ID, 5) for d in one) > 400  # the single draw wanders between words
    assert s2s.sample_text(logits, 0.0, 0, 0.0, PAD_ID, g) == PAD_ID  # temperature 0 stays fully greedy


def test_prompt_answer_makes_the_next_text_token_a_word():
    """Endpointing (ContextManager.prompt_agent -> gen.prompt_answer()): one step whose text may
    not be PAD, the model choosing the word; the steps around it sample as before."""
    torch.manual_seed(16)
    cfg = tiny_config("codes")
    model = s2s.S2SModel(cfg).eval()
    head = torch.nn.Linear(cfg.s2s.d_model, model.text_vocab)  # always quiet; word 7 when made to speak
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[PAD_ID], head.bias[7] = 20.0, 5.0
    model.agent_text_head = head
    gen = model.streaming(temperature=1.0, top_k=0, text_temperature=0.0, seed=0)
    frame = torch.zeros(cfg.s2s.n_codebooks, dtype=torch.long)
    ids = [gen.step(frame).agent_text_id for _ in range(3)]
    gen.prompt_answer()
    ids += [gen.step(frame).agent_text_id for _ in range(3)]
    assert ids == [PAD_ID] * 3 + [7] + [PAD_ID] * 2
    logits = torch.tensor([10.0, 0.0, 1.0, 0.5])
    g = torch.Generator().manual_seed(0)
    assert {s2s.sample_text(logits, 1.0, 0, -1.0, 0, g, allow_pad=False) for _ in range(200)} == {1, 2, 3}


# (7) many conversations in one batched step ---------------------------------------------------------
def _conversation_inputs(cfg, n_frames, seed):
    g = torch.Generator().manual_seed(seed)
    pcm = 0.1 * torch.randn(n_frames * cfg.codec.frame_size, generator=g)
    return {"frames": list(pcm.view(n_frames, -1)), "voice": torch.randn(cfg.speaker.embed_dim, generator=g)}


def _assert_same_outputs(batched, alone, exact_logits=False):
    assert len(batched) == len(alone)
    for t, (b, a) in enumerate(zip(batched, alone)):
        assert b.step == a.step == t
        assert b.agent_text_id == a.agent_text_id and b.user_text_id == a.user_text_id, t
        assert (b.agent_codes is None) == (a.agent_codes is None), t
        if a.agent_codes is not None:
            assert torch.equal(b.agent_codes, a.agent_codes), t
        for key in ("user_text", "agent_text", "agent_codes"):
            if exact_logits:
                assert torch.equal(b.logits[key], a.logits[key]), (t, key)
            else:  # a batched matmul may round its last bits differently from a single row's
                torch.testing.assert_close(b.logits[key], a.logits[key], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temperature,user_input", [(0.0, "latent"), (0.9, "latent"), (0.9, "ear")])
def test_a_conversation_in_a_batch_equals_it_alone(temperature, user_input):
    """Conversations stepped in one GeneratorBatch, joining and leaving at different ticks, some
    ticks without a frame for some of them, each at its own position (the window of 8 frames fills
    and slides), give exactly what each gives stepped alone: greedy, and sampled with each
    conversation's own seeded generator. Forcing (silence after a barge-in, prompt_answer) is per
    conversation. The user's pcm goes through the codec's streaming encoder (or the ear's), each
    row with its own stream state, as in the server."""
    import telugu_asr
    import telugu_codec_fixed

    torch.manual_seed(11)
    cfg = tiny_config(user_input, context_frames=8)
    cfg.codec.channels, cfg.codec.res_units = [16, 32], 1
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads, cfg.asr.context_frames = 32, 1, 2, 6
    cfg.s2s.ear_dim = cfg.asr.d_model
    codec = telugu_codec_fixed.Codec(cfg.codec).eval()
    ear = telugu_asr.Ear(cfg).eval() if user_input == "ear" else None
    model = s2s.S2SModel(cfg).eval()
    # name: (first tick, frames, ticks skipped, silence at its step, prompt at its step)
    plan = {"a": (0, 30, set(), 6, None), "b": (3, 12, {8, 9}, None, 4), "c": (5, 25, {12}, 10, 12),
            "d": (16, 14, set(), None, None), "e": (20, 2, set(), None, None)}
    inputs = {name: _conversation_inputs(cfg, n, seed=i) for i, (name, (_, n, _, _, _)) in enumerate(plan.items())}

    def new_gen(name, i):
        return model.streaming(voice=inputs[name]["voice"], temperature=temperature, top_k=5, seed=100 + i,
                               codec=codec, ear=ear)

    def hooks(gen, name):  # the context manager's calls, at the conversation's own step
        _, _, _, silence_at, prompt_at = plan[name]
        if gen.step_index == silence_at:
            gen.silence(3)
        if gen.step_index == prompt_at:
            gen.prompt_answer()

    alone = {}
    for i, name in enumerate(plan):
        gen = new_gen(name, i)
        alone[name] = []
        for frame in inputs[name]["frames"]:
            hooks(gen, name)
            alone[name].append(gen.step(frame))

    batch = s2s.GeneratorBatch(model, codec, ear=ear)
    gens, batched = {}, {name: [] for name in plan}
    for tick in range(45):
        for i, (name, (first, n, skips, _, _)) in enumerate(plan.items()):
            if tick == first:
                gens[name] = new_gen(name, i)
                batch.add(gens[name])
        stepped, frames = [], []
        for name, gen in gens.items():
            if tick in plan[name][2] or gen.batch is None:
                continue  # no frame from this client this tick: it comes a tick later
            hooks(gen, name)
            stepped.append(gen)
            frames.append(inputs[name]["frames"][gen.step_index])
        for gen, out in zip(stepped, batch.step(stepped[::-1], frames[::-1])[::-1]):  # any order
            batched[next(k for k, g in gens.items() if g is gen)].append(out)
        for name, gen in gens.items():
            if gen.batch is not None and gen.step_index == plan[name][1]:
                batch.remove(gen)  # the conversation ends: its row goes, the others stay
    assert len(batch) == 0
    for name in plan:
        _assert_same_outputs(batched[name], alone[name])


def test_a_batch_of_one_is_the_lone_generator():
    """The single-conversation API is a batch of one through the same code: stepping a generator
    that was moved into a fresh GeneratorBatch gives bit-identical logits."""
    torch.manual_seed(12)
    cfg = tiny_config("codes", context_frames=6)
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, 14)
    a, b = model.streaming(temperature=0.7, seed=3), model.streaming(temperature=0.7, seed=3)
    shared = s2s.GeneratorBatch(model)
    shared.add(b)
    outs_a = [a.step(user_frame(cfg, batch, t)) for t in range(14)]
    outs_b = [shared.step([b], [user_frame(cfg, batch, t)])[0] for t in range(14)]
    _assert_same_outputs(outs_b, outs_a, exact_logits=True)


def test_a_conversation_moves_between_batches_with_its_state():
    """add() takes a conversation from the batch it is in, caches and stream state included, even
    from the middle of a full one (whose last row then moves into the hole), and it goes on as if
    it had never moved; the conversations left behind go on too."""
    torch.manual_seed(13)
    cfg = tiny_config("mel", context_frames=6)
    model = s2s.S2SModel(cfg).eval()
    batch = random_batch(cfg, 1, 20)
    frames = [user_frame(cfg, batch, t) for t in range(20)]
    voices = torch.randn(3, cfg.speaker.embed_dim)
    alone = [model.streaming(temperature=0.0, voice=voices[i]) for i in range(3)]
    moved = [model.streaming(temperature=0.0, voice=voices[i]) for i in range(3)]
    want = [[g.step(f) for f in frames] for g in alone]
    first, second = s2s.GeneratorBatch(model), s2s.GeneratorBatch(model)
    for g in moved:
        first.add(g)
    got = [[], [], []]
    for t, f in enumerate(frames):
        if t == 8:
            second.add(moved[0])  # row 0 of three: row 2 moves into its place in `first`
        for i, g in enumerate(moved):
            got[i].append(g.batch.step([g], [f])[0])
    assert len(first) == 2 and len(second) == 1
    for i in range(3):
        _assert_same_outputs(got[i], want[i])
