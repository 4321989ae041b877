"""User-channel augmentation: make every training voice and room a little unlike itself.

The S2S probe (S2S_PROBE.md) memorised its training voices; these effects push the user's side
towards voices, microphones and rooms that no synthetic voice has. Each effect is a pair

    sample_<effect>(rng, strength) -> params (a small JSON-able dict)
    apply_<effect>(pcm, sr, params) -> pcm

and `augment` draws a random subset in a fixed order. Everything an effect needs, noise included,
is in its params (noise comes from a stored seed), so `apply(pcm, sr, params)` reproduces an
augmentation exactly: a corpus can store the params next to the clean audio.

Order, as sound travels: speaker (tempo, pitch, formant) -> room (reverb) -> background (noise)
-> microphone (EQ) -> line (band limit) -> recorder (level, soft clipping).

Timing: only tempo changes length; its word timings are scaled with it. All other effects keep
the length exactly, and keep events in place: reverb's impulse response starts with the direct
sound at lag 0, filters that could shift time are run forwards and backwards.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

import audio_io

# Effects in the order they are applied; tempo is the only one that changes the length.
VOICE_EFFECTS = ("tempo", "pitch", "formant")
CHANNEL_EFFECTS = ("reverb", "noise", "mic_eq", "band_limit", "level", "soft_clip")
EFFECTS = VOICE_EFFECTS + CHANNEL_EFFECTS
LENGTH_PRESERVING = tuple(e for e in EFFECTS if e != "tempo")

# probability of each effect at strength 1
PROBABILITY = {"tempo": 0.5, "pitch": 0.5, "formant": 0.5, "reverb": 0.4, "noise": 0.6, "mic_eq": 0.5,
               "band_limit": 0.25, "level": 0.7, "soft_clip": 0.15}

_N_FFT, _HOP = 1024, 256  # ~43 ms windows at 24 kHz: fine enough in frequency for speech harmonics


# --- STFT with exact inverse ----------------------------------------------------------------------

def _stft(x: np.ndarray, n_fft: int = _N_FFT, hop: int = _HOP) -> np.ndarray:
    """(frames, bins) complex spectrogram of x, centred frames (zero-padded by n_fft // 2)."""
    pad = n_fft // 2
    xp = np.pad(x.astype(np.float64), (pad, pad + n_fft))
    n_frames = 1 + (len(x) + pad) // hop
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)


def _istft(spec: np.ndarray, length: int, n_fft: int = _N_FFT, hop: int = _HOP) -> np.ndarray:
    window = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    total = hop * (len(frames) - 1) + n_fft
    out, norm = np.zeros(total), np.zeros(total)
    for i, f in enumerate(frames):  # a few thousand frames at most; numpy slices are fast enough
        out[i * hop:i * hop + n_fft] += f
        norm[i * hop:i * hop + n_fft] += window**2
    out = out / np.maximum(norm, 1e-8)
    pad = n_fft // 2
    out = out[pad:pad + length]
    return np.pad(out, (0, length - len(out))).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Phase vocoder: rate > 1 is faster (shorter), pitch and formants unchanged.
    Output length is round(len(x) / rate)."""
    if abs(rate - 1.0) < 1e-6 or len(x) == 0:
        return x.astype(np.float32)
    spec = _stft(x)
    steps = np.arange(0, len(spec), rate)
    spec = np.concatenate([spec, np.zeros((2, spec.shape[1]), spec.dtype)])
    i0 = steps.astype(int)
    frac = (steps - i0)[:, None]
    mag = (1 - frac) * np.abs(spec[i0]) + frac * np.abs(spec[i0 + 1])
    advance = 2 * np.pi * _HOP * np.arange(spec.shape[1]) / _N_FFT  # expected phase advance per hop
    dphase = np.angle(spec[i0 + 1]) - np.angle(spec[i0]) - advance
    dphase -= 2 * np.pi * np.round(dphase / (2 * np.pi))
    increments = np.concatenate([np.zeros((1, spec.shape[1])), np.cumsum(advance + dphase, axis=0)[:-1]])
    # Phase is accumulated from the last quiet frame on, which restarts at the analysis phase:
    # otherwise phase carries across pauses, and a change far below audibility before a pause
    # (PCM16 rounding) changes the waveform of everything after it.
    energy = np.sum(np.abs(spec[i0]) ** 2, axis=1)
    quiet = energy < 1e-4 * max(float(energy.max()), 1e-20)
    quiet[0] = True
    last_reset = np.maximum.accumulate(np.where(quiet, np.arange(len(steps)), 0))
    phase = np.angle(spec[i0[last_reset]]) + increments - increments[last_reset]
    return _istft(mag * np.exp(1j * phase), int(round(len(x) / rate)))


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    return x[:length] if len(x) >= length else np.pad(x, (0, length - len(x)))


# --- speaker: tempo, pitch, formants --------------------------------------------------------------

def sample_tempo(rng, strength=1.0):
    return {"rate": float(np.exp(rng.uniform(-1, 1) * np.log(1.25) * strength))}  # 0.8x .. 1.25x


def apply_tempo(pcm, sr, params, words=None):
    """Faster or slower speech at the same pitch; word times divide by the rate."""
    rate = params["rate"]
    out = time_stretch(pcm, rate)
    if words is not None:
        words = [{**w, "start": round(w["start"] / rate, 3), "end": round(w["end"] / rate, 3)} for w in words]
    return out, words


def sample_pitch(rng, strength=1.0):
    return {"semitones": float(rng.uniform(-4, 4) * strength)}


def apply_pitch(pcm, sr, params):
    """Shift pitch (and the spectrum with it) by stretching then resampling back to the length."""
    factor = 2.0 ** (params["semitones"] / 12)
    if abs(factor - 1) < 1e-4:
        return pcm.astype(np.float32)
    longer = time_stretch(pcm, 1 / factor)
    return _fit(audio_io.resample(longer, int(round(sr * factor)), sr), len(pcm))


def sample_formant(rng, strength=1.0):
    return {"warp": float(np.exp(rng.uniform(-1, 1) * np.log(1.18) * strength))}  # 0.85 .. 1.18


def apply_formant(pcm, sr, params, lifter_ms: float = 1.6):
    """Vocal-tract-length perturbation: move the spectral envelope (formants) by `warp` while the
    harmonics (pitch) stay. The envelope is the low-quefrency part of the real cepstrum; each frame
    is multiplied by warped envelope / envelope. warp > 1: a shorter tract (child-like)."""
    warp = params["warp"]
    if abs(warp - 1) < 1e-4 or len(pcm) == 0:
        return pcm.astype(np.float32)
    spec = _stft(pcm)
    log_mag = np.log(np.abs(spec) + 1e-7)
    cep = np.fft.irfft(log_mag, n=_N_FFT, axis=1)
    q = max(4, int(lifter_ms * sr / 1000))
    cep[:, q:_N_FFT - q + 1] = 0
    env = np.fft.rfft(cep, axis=1).real
    bins = np.arange(spec.shape[1])
    warped = np.stack([np.interp(bins / warp, bins, e) for e in env])
    gain = np.exp(np.clip(warped - env, -np.log(20), np.log(20)))
    return _istft(spec * gain, len(pcm))


# --- room -----------------------------------------------------------------------------------------

def sample_reverb(rng, strength=1.0):
    return {"rt60": float(rng.uniform(0.1, 0.1 + 0.7 * strength)), "wet": float(rng.uniform(0.2, 0.7)),
            "seed": int(rng.integers(0, 2**31))}


def room_impulse_response(sr, rt60, seed, max_s: float = 1.0) -> np.ndarray:
    """Direct sound at lag 0 plus an exponentially decaying noise tail (-60 dB at rt60) whose highs
    decay faster, as air and walls absorb them."""
    n = int(min(max_s, 1.2 * rt60) * sr)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    b, a = signal.butter(1, 4000 / (sr / 2))
    tail = signal.lfilter(b, a, tail)
    tail[: int(0.002 * sr)] = 0  # first reflections arrive a few ms after the direct sound
    tail /= np.sqrt(np.sum(tail**2)) + 1e-9
    ir = tail
    ir[0] = 1.0
    return ir


def apply_reverb(pcm, sr, params):
    ir = room_impulse_response(sr, params["rt60"], params["seed"])
    tail = ir.copy()
    tail[0] = 0
    wet = signal.fftconvolve(pcm, tail)[: len(pcm)]
    out = pcm + params["wet"] * wet
    return _match_rms(out, pcm)


def _match_rms(out, ref):
    r_out, r_ref = np.sqrt(np.mean(out**2)), np.sqrt(np.mean(ref**2))
    return (out * (r_ref / r_out) if r_out > 1e-9 else out).astype(np.float32)


# --- background noise -----------------------------------------------------------------------------

NOISE_KINDS = ("white", "pink", "brown", "babble")


def sample_noise(rng, strength=1.0):
    hi = 30.0
    lo = hi - 25.0 * strength  # strength 1: SNR 5-30 dB
    return {"kind": NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))], "snr_db": float(rng.uniform(lo, hi)),
            "seed": int(rng.integers(0, 2**31))}


def _coloured_noise(n, exponent, rng):
    """Noise with power ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    return np.fft.irfft(spec / f ** (exponent / 2), n=n)


def _babble(pcm, rng, talkers=None):
    """Speech-like noise from the signal itself: several time-reversed, shifted copies (reversed
    speech has speech's spectrum and rhythm but no words)."""
    talkers = talkers or int(rng.integers(3, 7))
    rev = pcm[::-1].astype(np.float64)
    return sum(np.roll(rev, int(rng.integers(0, max(1, len(pcm))))) for _ in range(talkers))


def speech_power(pcm, sr, floor_db: float = 40.0) -> float:
    """Mean power of the 20 ms frames within floor_db of the loudest: the speech, not the pauses."""
    hop = max(1, int(0.02 * sr))
    n = len(pcm) // hop
    if n == 0:
        return float(np.mean(pcm**2)) if len(pcm) else 0.0
    p = np.mean(pcm[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)
    loud = p[p > p.max() * 10 ** (-floor_db / 10)]
    return float(loud.mean()) if loud.size else 0.0


def apply_noise(pcm, sr, params):
    rng = np.random.default_rng(params["seed"])
    kind = params["kind"]
    if kind == "babble":
        noise = _babble(pcm, rng)
    else:
        noise = _coloured_noise(len(pcm), {"white": 0, "pink": 1, "brown": 2}[kind], rng)
    p_signal, p_noise = speech_power(pcm, sr), float(np.mean(noise**2)) if len(noise) else 0.0
    if p_signal <= 0 or p_noise <= 0:
        return pcm.astype(np.float32)
    noise = noise * np.sqrt(p_signal / (p_noise * 10 ** (params["snr_db"] / 10)))
    return (pcm + noise).astype(np.float32)


# --- microphone and line --------------------------------------------------------------------------

def _peaking(f0, gain_db, q, sr):
    """RBJ audio-EQ-cookbook peaking biquad as second-order sections."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def sample_mic_eq(rng, strength=1.0):
    bands = [{"f0": float(np.exp(rng.uniform(np.log(150), np.log(7000)))),
              "gain_db": float(rng.uniform(-8, 8) * strength), "q": float(rng.uniform(0.5, 3.0))}
             for _ in range(int(rng.integers(2, 5)))]
    return {"bands": bands, "highpass_hz": float(rng.uniform(50, 50 + 150 * strength))}


def apply_mic_eq(pcm, sr, params):
    """A microphone's colour: a low cut and a few resonances and dips."""
    sos = [signal.butter(2, params["highpass_hz"] / (sr / 2), "highpass", output="sos")]
    sos += [_peaking(b["f0"], b["gain_db"], b["q"], sr) for b in params["bands"] if b["f0"] < 0.45 * sr]
    return signal.sosfilt(np.concatenate(sos), pcm).astype(np.float32)  # min-phase: a few samples of delay


BAND_LIMITS = ("telephone", "8k", "16k")


def sample_band_limit(rng, strength=1.0):
    return {"mode": BAND_LIMITS[int(rng.integers(len(BAND_LIMITS)))]}


def apply_band_limit(pcm, sr, params):
    """Telephone band (300-3400 Hz through 8 kHz) or a round trip through 8 or 16 kHz; zero-phase
    band-pass so nothing moves in time."""
    mode = params["mode"]
    low_sr = 16000 if mode == "16k" else 8000
    out = audio_io.resample(audio_io.resample(pcm, sr, low_sr), low_sr, sr)
    if mode == "telephone":
        sos = signal.butter(4, [300 / (sr / 2), 3400 / (sr / 2)], "bandpass", output="sos")
        out = signal.sosfiltfilt(sos, out)
    return _fit(out.astype(np.float32), len(pcm))


# --- recorder: level and clipping -----------------------------------------------------------------

def sample_level(rng, strength=1.0):
    return {"gain_db": float(rng.uniform(-15, 6) * strength)}


def apply_level(pcm, sr, params):
    return (pcm * 10 ** (params["gain_db"] / 20)).astype(np.float32)


def sample_soft_clip(rng, strength=1.0):
    return {"drive": float(1 + rng.uniform(0, 4) * strength)}


def apply_soft_clip(pcm, sr, params):
    """tanh saturation of an overdriven input; the level of quiet parts stays about the same."""
    d = params["drive"]
    return (np.tanh(d * pcm) / d).astype(np.float32)


_SAMPLERS = {name: globals()[f"sample_{name}"] for name in EFFECTS}
_APPLIERS = {name: globals()[f"apply_{name}"] for name in EFFECTS}


# --- the entry points -----------------------------------------------------------------------------

def sample_params(rng, strength: float = 1.0, effects=EFFECTS) -> dict:
    """Which effects, with which settings: {effect: params} in application order. `rng` is a numpy
    Generator; strength 0 gives {}, 1 the full ranges above."""
    params = {}
    for name in EFFECTS:
        if name in effects and rng.uniform() < min(1.0, PROBABILITY[name] * strength):
            params[name] = _SAMPLERS[name](rng, strength)
    return params


def apply(pcm: np.ndarray, sr: int, params: dict, words=None):
    """Apply stored params (from sample_params or a corpus JSON). Returns (pcm, words)."""
    pcm = np.asarray(pcm, dtype=np.float32)
    for name in EFFECTS:
        if name not in params:
            continue
        if name == "tempo":
            pcm, words = apply_tempo(pcm, sr, params[name], words)
        else:
            pcm = _APPLIERS[name](pcm, sr, params[name])
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    if peak > 0.999:  # a loud augmentation must not wrap around in PCM16
        pcm = pcm * (0.999 / peak)
    return pcm.astype(np.float32), words


def augment(pcm: np.ndarray, sr: int, rng, words=None, strength: float = 1.0, effects=EFFECTS):
    """Randomly augment one signal: returns (pcm, words, params). Deterministic given rng (a numpy
    Generator). Only "tempo" changes the length (words are rescaled with it); pass
    effects=LENGTH_PRESERVING to keep the length and every timing."""
    params = sample_params(rng, strength, effects)
    pcm, words = apply(pcm, sr, params, words)
    return pcm, words, params
