"""Typed configuration for every part of telugu-s2s.

One dataclass per part; a preset YAML in configs/ (tiny: this 2-core CPU, a6000: one 48 GB GPU)
overrides the defaults, and `--set section.key=value` overrides the preset. Every checkpoint
saves its whole Config as JSON beside it, so a checkpoint always knows how it was built.
Unknown keys and wrong types fail here, naming the key, not deep inside a model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT / "configs"


class ConfigError(ValueError):
    pass


@dataclass
class AudioConfig:
    sample_rate: int = 24000
    frame_ms: int = 40  # one codec frame; the server and S2S step once per frame

    @property
    def frame_size(self) -> int:
        return self.sample_rate * self.frame_ms // 1000


@dataclass
class CodecConfig:
    sample_rate: int = 24000
    patch_size: int = 240  # samples per encoder input step / decoder iSTFT hop (10 ms)
    strides: list[int] = field(default_factory=lambda: [4])  # patch rate -> frame rate (100 Hz -> 25 Hz)
    channels: list[int] = field(default_factory=lambda: [192, 384])  # one width per rate
    res_units: int = 3  # residual units per rate, dilations 1, 3, 9, ...
    kernel_sizes: list[int] = field(default_factory=lambda: [7, 3])  # per rate: wide at 100 Hz, cheap at 25 Hz
    latent_dim: int = 128
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: int = 8  # factorized codes: look up in 8-d, L2-normalised (DAC)
    quantizer_dropout: float = 0.5  # share of a batch trained with fewer codebooks, so any K works
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    vq_warmup_steps: int = 500  # decoder sees the continuous latent, VQ fades in (CODEC_PROBE.md)
    dead_code_threshold: float = 0.02  # codes used at under 2 % of the uniform rate are restarted
    harmonics: int = 0  # >0: harmonic oscillator (HarmonicHead) + the iSTFT head as shaped noise
    # "istft": the DAC-style codec above. "source_filter": pitch is transmitted (a causal YIN track
    # quantized into codebook 0) and the decoder is a harmonic-plus-noise synthesiser whose filters
    # are learnt (telugu_codec_fixed.SourceFilterDecoder). Old configs have neither key: istft.
    decoder: str = "istft"
    pitch_codebooks: int = 0  # source_filter: 1, codebook 0 = F0 contour + voicing of the frame
    pitch_slopes: int = 8  # F0 slopes per frame in the pitch code (the rest of its entries: mean F0)
    f0_min: float = 60.0
    f0_max: float = 500.0
    analysis_fft: int = 1024  # causal analysis window (encoder log-mel and envelope target)
    encoder_mels: int = 80  # log-mel bands the source_filter encoder reads
    envelope_bands: int = 32  # mel bands of the decoded spectral envelope (and its target)
    source_harmonics: int = 80  # harmonics of the source_filter decoder's oscillator
    delay_patches: int = 2  # source_filter: output lags the input by this many patches (see DESIGN.md)

    @property
    def frame_size(self) -> int:
        n = self.patch_size
        for s in self.strides:
            n *= s
        return n


@dataclass
class DiscriminatorConfig:
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: int = 16  # first layer width of each period discriminator (DAC: 32)
    stft_windows: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    stft_channels: int = 16  # DAC: 32
    bands: list[list[float]] = field(
        default_factory=lambda: [[0.0, 0.1], [0.1, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])
    grad_clip: float = 10.0  # DAC's discriminator clip


@dataclass
class LossConfig:  # DAC's weights as the starting point
    mel_weight: float = 15.0
    adv_weight: float = 1.0
    feat_weight: float = 2.0
    mel_windows: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    gan_start_step: int = 0  # steps of reconstruction-only training before the discriminators join
    waveform_weight: float = 0.0  # time-domain L1 (EnCodec); DAC has none and relies on the GAN for phase
    phase_weight: float = 0.0  # APNet's phase losses (spectral.PhaseLoss): phase without a GAN
    f0_weight: float = 5.0  # with codec.harmonics: the harmonic head's F0 against YIN's (octaves)
    f0_teacher_share: float = 0.5  # ... and the share of clips whose harmonics play YIN's F0 in training
    # Multi-resolution STFT loss (linear + log magnitude; hn-NSF, Parallel WaveGAN): the
    # source_filter decoder's main loss. 0: off (the istft codec trains on mel alone).
    stft_weight: float = 0.0
    stft_windows: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    envelope_weight: float = 1.0  # source_filter: decoded envelope against the input's (log-mel L1)


@dataclass
class SpeakerConfig:
    sample_rate: int = 16000  # log-mel at 16 kHz is enough for identity and half the cost
    n_mels: int = 64
    channels: int = 256
    embed_dim: int = 192
    margin: float = 0.2  # additive angular margin
    scale: float = 30.0
    segment_s: float = 2.0
    threshold: float = 0.5  # same/different decision; calibrated at the EER point by train_speakers.py


@dataclass
class AsrConfig:
    """The ear (telugu_asr.py): a streaming CTC recogniser over the codec's 25 Hz frames."""
    sample_rate: int = 24000
    window_ms: int = 25  # log-mel window, ending on each 10 ms hop
    n_mels: int = 80
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    dropout: float = 0.1
    ctc_per_frame: int = 2  # CTC slots per 40 ms frame: 50 Hz of output room for fast speech
    context_frames: int = 250  # attention window while streaming (10 s); training clips are shorter
    # training only
    augment_prob: float = 0.8  # share of clips through augment.py (voice, room, microphone)
    augment_strength: float = 1.0
    spec_time_masks: int = 2  # SpecAugment: masks of up to spec_time_width 10 ms hops
    spec_time_width: int = 8
    spec_freq_masks: int = 2  # ... and of up to spec_freq_width mel bands
    spec_freq_width: int = 12
    pad_s: float = 0.6  # up to this much silence (with a noise floor) before and after a clip
    speech_weight: float = 0.2  # the speech-probability head's BCE beside the CTC loss
    max_clip_s: float = 9.0  # longer clips are skipped in training (the window is 10 s)


@dataclass
class BrainConfig:
    """The brain (agent_brain.py): a causal LM over the conversation's text, with tools."""
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    dropout: float = 0.0
    context_tokens: int = 384  # pieces of conversation it reads (a few turns)
    max_answer_tokens: int = 64  # an answer, its calls and results included, is cut here
    # training only (train_brain.py)
    train_tokens: int = 192  # a training dialogue is cut to its last turns that fit (most fit whole)
    max_noise_scale: float = 2.0  # the ear's measured errors, scaled by up to this (checkpoints/ear_errors.json)
    clean_share: float = 0.2  # dialogues whose user side is the true text
    word_dropout: float = 0.15  # request words (not slot words) dropped: learn every cue of an intent
    wait_share: float = 0.3  # requests cut at a random word and marked WAIT there (brain_data.dialogue_stream)
    # dialogues whose user side is what the agent really read (train_brain.py --readings, rendered
    # with --render_readings) instead of the replayed edit statistics
    readings_share: float = 0.0


@dataclass
class S2SConfig:
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    depth_d_model: int = 256
    depth_layers: int = 2
    depth_heads: int = 4
    n_codebooks: int = 8  # agent codebooks modelled (the first K of the codec)
    acoustic_delay: int = 1  # codebooks 1.. lag codebook 0 by this many frames (Moshi)
    # Attention window (KV cache) while streaming: 10 s at 25 Hz, older frames slide out. No longer than
    # the stage-2 training crops: past what it trained on the model hears worse (docs/experiments.md, session 8).
    context_frames: int = 250
    user_input: str = "latent"  # "mel" | "latent" | "codes": latent won on unseen voices (docs/s2s_input_choice.md)
    ear_dim: int = 0  # user_input "ear": the ear's feature width (asr.d_model of the frozen telugu_asr.Ear)
    text_vocab_size: int = 0  # set from the trained tokenizer
    dropout: float = 0.1
    text_weight: float = 2.0
    first_codebook_weight: float = 2.0
    user_text_weight: float = 1.0
    user_text_noise: float = 0.0  # training only: share of the user-text tokens read back replaced at random
    clock: bool = False  # condition on the date and time ("what time is it"); on in the presets (old configs: off)
    temperature: float = 0.8  # agent audio codes
    top_k: int = 50
    text_temperature: float = 0.8  # agent text (Moshi samples its text cooler than its audio)
    text_top_k: int = 50
    # <0: text tokens sampled as one distribution (Moshi). >=0: two draws per frame, *whether* a word
    # starts (PAD or not, at text_temperature) and then *which* word, at this temperature (0: the
    # likeliest). Timing is uncertain where content is not; one draw over both lets a low-probability
    # word slip in each frame and splices answer wordings together.
    text_word_temperature: float = -1.0


@dataclass
class ContextConfig:
    """One conversation's bookkeeping (context_manager.py)."""
    vad_margin_db: float = 12.0  # speech = this far above the tracked noise floor
    vad_min_db: float = -55.0  # ... and above this absolute level (dBFS)
    # With the ear (telugu_asr) in the loop: the user speaks when its speech probability is at least
    # this (instead of the energy rule above); 0 keeps the energy VAD even with an ear.
    ear_vad_threshold: float = 0.5
    noise_window_frames: int = 50  # the noise floor is the quietest frame of the last 2 s
    vad_onset_frames: int = 2  # frames of speech before a side counts as speaking
    vad_hangover_frames: int = 8  # frames of silence before it stops (320 ms: pauses inside a turn)
    barge_in_frames: int = 3  # user speech over the agent for 120 ms = an interruption, not a backchannel
    yield_frames: int = 25  # after a barge-in the agent stays silent this long unless the user stops
    # Endpointing: the user has finished (VAD hangover passed, state "thinking") and the agent is still
    # silent this many frames later: its next text token may not be PAD, so it starts its answer
    # (a word of its own choosing). -1: off, the model alone decides when to speak (Moshi).
    respond_after_frames: int = 2
    # Early endpoint, inside the VAD hangover: the user has been quiet this many frames and the
    # model's P(word) this frame is at least endpoint_word_prob (0: off). See ContextManager.update;
    # on held-out dialogues it cut the median response gap from 506 to 362 ms (docs/experiments.md, session 9).
    endpoint_quiet_frames: int = 2
    endpoint_word_prob: float = 0.03
    # The v2 agent (voice_agent.py): after endpoint_quiet_frames of quiet the brain reads the words
    # so far; it answers when P(a whole request) >= end_of_turn_prob, or anyway after max_wait_frames
    # of quiet (the corpus's pauses inside a request last 0.25-0.7 s).
    end_of_turn_prob: float = 0.5
    max_wait_frames: int = 25
    brain_pieces_per_tick: int = 8  # the brain writes an answer this many pieces a frame (a worker's tick)
    # The v2 agent reads each request with the ear's language model (ear_lm.py): a CTC prefix beam
    # search of ear_lm_beam readings, the LM weighted ear_lm_alpha, ear_lm_beta per character
    # (tuned on held-out val requests, docs/ear_lm.json). ear_lm_beam 0: the greedy transcript.
    ear_lm_alpha: float = 0.4
    ear_lm_beta: float = 2.0
    ear_lm_beam: int = 16
    # The v2 agent after a barge-in: when what the user said over it reads as a backchannel ("ఊ",
    # "అవును", ...: at most two words of dialogue_domain.BACKCHANNELS, or 2 characters) and they are
    # quiet again within resume_frames, it says the rest of its answer instead of answering "ఊ".
    # It still goes quiet within barge_in_frames, so an interruption is never talked over. 0: off.
    resume_frames: int = 25
    text_lag_frames: int = 25  # transcript pieces this late still belong to the turn that ended
    history_turns: int = 200  # turns kept with text; older ones are dropped (hour-long sessions)
    timing_window: int = 1500  # frames of per-frame timings kept for percentiles (60 s)


@dataclass
class MouthConfig:
    """agent_mouth.py: agent text -> pitch-codec frames in a chosen voice (issue #25 section 3)."""
    codec_checkpoint: str = "checkpoints/codec_pitch.safetensors"  # the codec whose frames it speaks
    voices: list[str] = field(default_factory=lambda: ["lakshmi", "priya", "ravi", "kiran"])
    voice_dim: int = 192  # the speaker encoder's embedding (checkpoints/voice_bank.json)
    d_model: int = 192  # text encoder over the characters of the whole answer (look-ahead is free)
    n_layers: int = 4
    n_heads: int = 4
    conv_kernel: int = 5  # a conv before the attention layers: local context, relative position
    dropout: float = 0.1
    frame_hidden: int = 256  # causal frame decoder (GRU), one step per 40 ms frame
    frame_layers: int = 2
    latent_weight: float = 1.0  # L1 on the codec's continuous envelope latent
    f0_weight: float = 1.0  # L1 on log2 F0 of each 10 ms patch (octaves), voiced frames only
    voicing_weight: float = 0.2  # BCE on the frame's voicing (pitch code > 0)
    duration_weight: float = 0.5  # MSE on log(1 + frames) per symbol


@dataclass
class TrainConfig:
    epochs: int = 100
    max_steps: int = 0  # 0: run the epochs; >0 stops there (useful for time-boxed CPU runs)
    max_minutes: float = 0.0  # >0: stop after this much wall-clock time; the LR schedule decays over it too
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    lr_min_ratio: float = 0.1  # cosine decay floor
    warmup_steps: int = 200
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    grad_clip: float = 1.0
    segment_s: float = 0.96  # random crop length
    save_every: int = 10  # epochs (the plan's --save_every)
    save_every_steps: int = 500
    eval_every_steps: int = 500
    log_every_steps: int = 25
    keep_checkpoints: int = 3
    num_workers: int = 0
    threads: int = 0  # torch.set_num_threads; 0 leaves torch's default
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on GPUs that support it) | fp32 | bf16
    compile: bool = False
    out_dir: str = "runs/codec"


@dataclass
class DataConfig:
    data_dir: str = "data/synthetic"
    train_manifest: str = "train.jsonl"  # relative to data_dir
    val_manifest: str = "val.jsonl"
    test_manifest: str = "test.jsonl"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_sessions: int = 64  # connections at most; below it the workers' capacity decides (busy error)
    # Conversations one worker steps in real time (its batch); 0: measured at start-up
    # (frame_scheduler.measure_capacity), the largest batch whose tick fits realtime_load of a frame.
    capacity: int = 0
    realtime_load: float = 0.6  # the share of a frame a worker's tick may take; the rest is headroom
    batching: bool = True  # false: each conversation stepped on its own (the baseline of the capacity sweep)
    batch_wait_ms: float = 5.0  # a tick waits this long for the other conversations' frames of its period
    token: str = ""
    allowed_origins: list[str] = field(default_factory=list)
    max_message_bytes: int = 65536
    max_messages_per_s: float = 100.0
    max_session_s: float = 3600.0
    idle_timeout_s: float = 30.0
    send_queue_frames: int = 50  # agent frames not yet written to a client that does not read: past it, dropped
    # User audio a conversation may have queued for the model while its worker falls behind (a busy
    # machine): the server lags and catches up instead of losing what the user said. Past it (a
    # worker hopelessly behind, or a client sending faster than real time) the session is closed
    # (overrun). 30 s of a conversation's frames are 2.9 MB.
    max_backlog_s: float = 30.0
    default_voice: str = ""


@dataclass
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    brain: BrainConfig = field(default_factory=BrainConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train_codec: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/codec"))
    train_speakers: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/speakers"))
    train_s2s: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/s2s"))
    train_asr: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/asr"))
    train_brain: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/brain"))
    mouth: MouthConfig = field(default_factory=MouthConfig)
    train_mouth: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/mouth"))
    server: ServerConfig = field(default_factory=ServerConfig)
    preset: str = "default"


# --- typed merging ---------------------------------------------------------------------------------

def _coerce(value, tp, key: str):
    """Check `value` against the annotation `tp`; allow the lossless conversions YAML needs."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _merge(obj, values: dict, prefix: str = ""):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))
    return obj


def set_value(cfg: Config, assignment: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (3, 1e-4, [1, 2], true)."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form section.key=value")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{dotted}: cannot parse value {raw!r}: {e}") from e
    nested = value
    for p in reversed(parts):
        nested = {p: nested}
    _merge(cfg, nested)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    return _merge(Config(), values)


def load_config(preset: str = "tiny", overrides: list[str] | None = None) -> Config:
    """`preset` is a name in configs/ ("tiny", "a6000") or a path to a YAML or JSON file."""
    path = Path(preset)
    if not path.suffix:
        path = CONFIG_DIR / f"{preset}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no config '{preset}' (presets: {known}; or give a .yaml/.json path)")
    with open(path, encoding="utf-8") as f:
        values = (json.load(f) if path.suffix == ".json" else yaml.safe_load(f)) or {}
    cfg = from_dict(values)
    if "preset" not in values:
        cfg.preset = path.stem
    for assignment in overrides or []:
        set_value(cfg, assignment)
    return cfg


def save_config(cfg: Config, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def config_json_path(checkpoint) -> Path:
    """The config saved beside a checkpoint: model.safetensors -> model.json."""
    return Path(checkpoint).with_suffix(".json")


# --- the command-line layer shared by the train scripts ------------------------------------------

def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default="auto",
                        help="preset in configs/ (tiny, a6000) or a YAML/JSON path; "
                             "auto = a6000 when CUDA is available, else tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. --set codec.n_codebooks=4 (repeatable)")
    return parser


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of the original plan, each a shortcut for one config value."""
    add_config_args(parser)
    parser.add_argument("--data_dir", help="folder with train/val/test JSONL manifests (data.data_dir)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max_steps", type=int)
    parser.add_argument("--save_every", type=int, help="save a checkpoint every N epochs")
    parser.add_argument("--out_dir", help="run folder: checkpoints, TensorBoard logs")
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from the last good checkpoint in out_dir (or a given .pt)")
    return parser


def resolve_preset(name: str) -> str:
    if name != "auto":
        return name
    import torch  # only here: config.py itself stays importable without torch
    return "a6000" if torch.cuda.is_available() else "tiny"


def config_from_args(args: argparse.Namespace, train_section: str) -> Config:
    """Build the Config a train script runs with: preset, then --set, then the plan's flags."""
    cfg = load_config(resolve_preset(args.config), args.overrides)
    train = getattr(cfg, train_section)
    for flag in ("epochs", "batch_size", "lr", "max_steps", "save_every", "out_dir", "device", "threads"):
        value = getattr(args, flag, None)
        if value is not None:
            _merge(train, {flag: value}, f"{train_section}.")
    if getattr(args, "data_dir", None):
        cfg.data.data_dir = args.data_dir
    return cfg


def main(argv=None):
    parser = add_config_args(argparse.ArgumentParser(description="print the resolved config as JSON"))
    args = parser.parse_args(argv)
    try:
        cfg = load_config(resolve_preset(args.config), args.overrides)
    except ConfigError as e:
        parser.error(str(e))
    print(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
