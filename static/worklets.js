// AudioWorklet processors for the voice agent page: the microphone in, the agent's voice out.
//
// "capture"  : context-rate mic -> 24 kHz mono PCM16 chunks (20 ms), posted to the page, plus levels.
// "playback" : 24 kHz PCM16 frames from the server -> context rate, through an adaptive jitter
//              buffer: it starts playing once `target` ms are buffered, raises the target after an
//              underrun, lowers it (and trims excess) after a calm while, and empties on "flush"
//              (barge-in) so the agent stops talking at once.

// Windowed-sinc resampler for a stream of blocks. The low-pass sits at the lower of the two
// Nyquist rates, so downsampling does not alias; `half` taps each side give ~half ms of latency.
class Resampler {
  constructor(inRate, outRate, half = 16, phases = 128) {
    this.step = inRate / outRate; // input samples per output sample
    this.half = half;
    this.phases = phases;
    this.buf = new Float32Array(0);
    this.t = half; // position of the next output sample in buf (input-sample units)
    this.passthrough = inRate === outRate;
    // Polyphase table: taps for `phases` fractional offsets, so no sin/cos per sample.
    const cutoff = Math.min(1, outRate / inRate) * 0.92;
    this.table = new Float32Array((phases + 1) * 2 * half);
    for (let p = 0; p <= phases; p++) {
      for (let k = -half + 1; k <= half; k++) {
        const d = k - p / phases;
        const w = 0.5 + 0.5 * Math.cos((Math.PI * d) / (half + 1)); // Hann window
        const x = Math.PI * d;
        this.table[p * 2 * half + (k + half - 1)] = (d === 0 ? cutoff : Math.sin(cutoff * x) / x) * w;
      }
    }
  }

  push(input) {
    if (this.passthrough) return Float32Array.from(input);
    const merged = new Float32Array(this.buf.length + input.length);
    merged.set(this.buf);
    merged.set(input, this.buf.length);
    const out = [];
    const h = this.half;
    while (Math.floor(this.t) + h < merged.length) {
      const center = Math.floor(this.t);
      const row = Math.round((this.t - center) * this.phases) * 2 * h;
      let acc = 0;
      for (let k = -h + 1; k <= h; k++) {
        const i = center + k;
        if (i >= 0) acc += merged[i] * this.table[row + k + h - 1];
      }
      out.push(acc);
      this.t += this.step;
    }
    // Keep what the next outputs still need.
    const keepFrom = Math.max(0, Math.floor(this.t) - h);
    this.buf = merged.slice(keepFrom);
    this.t -= keepFrom;
    return Float32Array.from(out);
  }
}

function rms(x) {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return x.length ? Math.sqrt(s / x.length) : 0;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.targetRate = o.targetRate || 24000;
    this.chunk = o.chunkSamples || Math.round(this.targetRate * 0.02);
    this.resampler = new Resampler(sampleRate, this.targetRate);
    this.out = new Int16Array(this.chunk);
    this.n = 0;
    this.levelSum = 0;
    this.levelCount = 0;
    this.active = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === "active") this.active = !!e.data.value;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !this.active) return true;
    let mono = input[0];
    if (input.length > 1) { // downmix
      mono = new Float32Array(input[0].length);
      for (const ch of input) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / input.length;
    }
    const y = this.resampler.push(mono);
    for (let i = 0; i < y.length; i++) {
      const v = Math.max(-1, Math.min(1, y[i]));
      this.out[this.n++] = v < 0 ? v * 32768 : v * 32767;
      if (this.n === this.chunk) {
        this.port.postMessage({ type: "pcm", pcm: this.out.buffer }, [this.out.buffer]);
        this.out = new Int16Array(this.chunk);
        this.n = 0;
      }
    }
    this.levelSum += rms(mono);
    this.levelCount++;
    if (this.levelCount >= 8) { // ~20 level updates a second at 48 kHz
      this.port.postMessage({ type: "level", rms: this.levelSum / this.levelCount });
      this.levelSum = 0;
      this.levelCount = 0;
    }
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.resampler = new Resampler(o.inputRate || 24000, sampleRate);
    this.ring = new Float32Array(sampleRate * 20); // 20 s: far above any target
    this.read = 0;
    this.write = 0;
    this.minMs = o.minMs || 60;
    this.maxMs = o.maxMs || 500;
    this.targetMs = o.startMs || 100;
    this.playing = false;
    this.underruns = 0;
    this.flushes = 0;
    this.played = 0;
    this.nonSilent = 0;
    this.calmFrames = 0; // render quanta since the last underrun
    this.lowWater = Infinity; // the least buffered since the last adaptation check
    this.levelSum = 0;
    this.levelCount = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  get buffered() { return this.write - this.read; }
  ms(samples) { return (1000 * samples) / sampleRate; }

  onMessage(d) {
    if (d.type === "pcm") {
      const i16 = new Int16Array(d.pcm);
      const f = new Float32Array(i16.length);
      for (let i = 0; i < i16.length; i++) f[i] = i16[i] / 32768;
      const y = this.resampler.push(f);
      if (this.buffered + y.length > this.ring.length) this.read = this.write + y.length - this.ring.length;
      for (let i = 0; i < y.length; i++) this.ring[(this.write + i) % this.ring.length] = y[i];
      this.write += y.length;
    } else if (d.type === "flush") {
      this.read = this.write; // drop everything the agent had queued
      this.playing = false;
      this.flushes++;
      this.report();
    }
  }

  adapt() {
    // Every ~2 s: a buffer that never ran low holds more latency than the network needs.
    if (this.calmFrames % 375 !== 0) return;
    const lowMs = this.ms(this.lowWater);
    if (this.calmFrames >= 1500) this.targetMs = Math.max(this.minMs, this.targetMs - 10);
    if (lowMs !== Infinity && lowMs > this.targetMs + 40) {
      const drop = Math.floor(((lowMs - this.targetMs) / 2) * sampleRate / 1000);
      this.read += Math.min(drop, this.buffered);
    }
    this.lowWater = Infinity;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (!this.playing && this.ms(this.buffered) >= this.targetMs) this.playing = true;
    if (this.playing && this.buffered < n) { // underrun: wait for a bigger cushion
      this.playing = false;
      this.underruns++;
      this.targetMs = Math.min(this.maxMs, this.targetMs + 20);
      this.calmFrames = 0;
    }
    if (this.playing) {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const v = this.ring[(this.read + i) % this.ring.length];
        out[i] = v;
        sum += v * v;
        if (Math.abs(v) > 1e-3) this.nonSilent++;
      }
      this.read += n;
      this.played += n;
      this.levelSum += Math.sqrt(sum / n);
      this.lowWater = Math.min(this.lowWater, this.buffered);
      this.calmFrames++;
      this.adapt();
    } else {
      out.fill(0);
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.levelCount++;
    if (this.levelCount >= 16) this.report();
    return true;
  }

  report() {
    this.port.postMessage({
      type: "stats", rms: this.levelCount ? this.levelSum / this.levelCount : 0,
      bufferedMs: this.ms(this.buffered), targetMs: this.targetMs, underruns: this.underruns,
      flushes: this.flushes, played: this.played, nonSilent: this.nonSilent, playing: this.playing,
    });
    this.levelSum = 0;
    this.levelCount = 0;
  }
}

registerProcessor("capture", CaptureProcessor);
registerProcessor("playback", PlaybackProcessor);
