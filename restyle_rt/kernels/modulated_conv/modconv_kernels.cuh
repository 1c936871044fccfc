// Device code of the fused modulated convolution (see modconv.h for the math). Three kernels:
//
//  demod_kernel        d[b,o] = rsqrt(scale^2 * sum_i (sum_t W[o,i,t]^2) * s[b,i]^2 + eps): one warp per o, the
//                      weight row is read once for up to 8 samples; a [B,Cin]x[Cin,Cout] product, FP32.
//  modconv_tiled       direct conv with shared-memory tiles, FP32 accumulate. A block owns one sample, TO output
//                      channels and an 8x16 tile of *input-resolution* positions; per Cin chunk of 8 it stages the
//                      modulated input tile x*s (with 1-pixel halo) and the scaled weights in shared memory. Warps
//                      own output channels (weights are warp-broadcast), lanes own 4 positions each.
//                      UP: conv_transpose 3x3 s2 + Blur is rewritten as 4 phase kernels of 3x3 taps over the same
//                      input window (reference.upsample_phase_weights), composed on the fly in shared memory, so one
//                      pass writes the 2H x 2W output with no 2H+1 intermediate.
//                      Epilogue: acc * d + noise + bias, lrelu(0.2) * sqrt(2), store FP32/FP16.
//  modconv_1x1_small   ToRGB-like 1x1 with Cout <= 4: per-sample modulated weights in shared memory, one thread per
//                      pixel reads x once (memory-bound op).
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace modconv {

constexpr float kDemodEps = 1e-8f;
constexpr float kLreluSlope = 0.2f;
constexpr float kLreluGain = 1.4142135623730951f;

struct Args {
    const void* x;         // [B, Cin, H, W]      T
    const float* s;        // [B, Cin]
    const float* weight;   // [Cout, Cin, k, k]   stored (unscaled)
    const float* bias;     // [Cout] or nullptr
    const float* noise;    // [Hout*Wout], [1] or nullptr
    const float* demod;    // [B, Cout] or nullptr
    void* out;             // [B, Cout, Hout, Wout] T
    int B, Cin, Cout, H, W, Hout, Wout;
    int noise_full;        // 1: per-pixel map, 0: scalar broadcast (only read when noise != nullptr)
    int activate;
    float scale;           // 1/sqrt(Cin*k*k)
};

__device__ __forceinline__ float load_f(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const __half* p, size_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store_f(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(__half* p, size_t i, float v) { p[i] = __float2half_rn(v); }

// Epilogue shared by both conv kernels: demod, noise, bias, activation.
__device__ __forceinline__ float epilogue(const Args& a, float acc, float d, float bo, int oy, int ox) {
    float v = acc * d;
    if (a.noise != nullptr) v += a.noise[a.noise_full ? (size_t)oy * a.Wout + ox : 0];
    v += bo;
    if (a.activate) v = (v >= 0.f ? v : kLreluSlope * v) * kLreluGain;
    return v;
}

// ---------------------------------------------------------------------------------------------------------------
// demodulation coefficients. grid (ceil(Cout/4)), block (32, 4).
__global__ void demod_kernel(const float* __restrict__ weight, const float* __restrict__ s,
                             float* __restrict__ demod, int B, int Cin, int Cout, int taps, float scale2) {
    const int o = blockIdx.x * blockDim.y + threadIdx.y;
    const int lane = threadIdx.x;
    if (o >= Cout) return;
    for (int b0 = 0; b0 < B; b0 += 8) {
        float acc[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j] = 0.f;
        for (int i = lane; i < Cin; i += 32) {
            const float* wp = weight + ((size_t)o * Cin + i) * taps;
            float wsq = 0.f;                                      // sum over kh, kw of W^2
            for (int t = 0; t < taps; ++t) wsq += wp[t] * wp[t];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                if (b0 + j < B) {
                    const float sv = s[(size_t)(b0 + j) * Cin + i];
                    acc[j] += wsq * sv * sv;
                }
            }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            float v = acc[j];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
            if (lane == 0 && b0 + j < B) demod[(size_t)(b0 + j) * Cout + o] = rsqrtf(v * scale2 + kDemodEps);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Phase composition of the upsampling path (matches reference.phase_matrix):
// M[p][t][j] = k1[j + 2t - p - 1], k1 = [1,3,3,1]/4, zero outside [0, 3].
__host__ __device__ constexpr float blur_tap(int a) {
    return (a == 0 || a == 3) ? 0.25f : ((a == 1 || a == 2) ? 0.75f : 0.f);
}
__host__ __device__ constexpr float phase_coef(int p, int t, int j) { return blur_tap(j + 2 * t - p - 1); }

// Tile geometry (input-resolution positions per block) and Cin chunk.
constexpr int kTH = 8, kTW = 16, kTC = 8, kThreads = 256, kWarps = kThreads / 32;
constexpr int kPosPerThread = kTH * kTW / 32;  // 4

// grid (tiles_x * tiles_y, ceil(Cout/TO), B), block (256).
template <typename T, int KS, bool UP, int TO>
__global__ void __launch_bounds__(kThreads) modconv_tiled(const Args a) {
    static_assert(!UP || KS == 3, "upsampling is defined for 3x3");
    static_assert(TO % kWarps == 0, "TO must be a multiple of the warp count");
    constexpr int HALO = KS / 2, IH = kTH + 2 * HALO, IW = kTW + 2 * HALO, TAPS = KS * KS;
    constexpr int PH = UP ? 4 : 1, OPW = TO / kWarps;               // phases, output channels per warp
    __shared__ float xs[kTC][IH][IW];                               // modulated input tile  [TC, IH, IW]
    __shared__ float ws[kTC][TO][PH][TAPS];                         // scaled (phase) weights [TC, TO, PH, TAPS]

    const T* __restrict__ x = static_cast<const T*>(a.x);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int tiles_x = (a.W + kTW - 1) / kTW;
    const int y0 = (blockIdx.x / tiles_x) * kTH, x0 = (blockIdx.x % tiles_x) * kTW;
    const int o0 = blockIdx.y * TO, b = blockIdx.z;
    const int col = lane % kTW, row0 = lane / kTW;                  // position m: (row0 + 2m, col)

    float acc[OPW][PH][kPosPerThread];
#pragma unroll
    for (int j = 0; j < OPW; ++j)
#pragma unroll
        for (int p = 0; p < PH; ++p)
#pragma unroll
            for (int m = 0; m < kPosPerThread; ++m) acc[j][p][m] = 0.f;

    for (int c0 = 0; c0 < a.Cin; c0 += kTC) {
        // x * s for the tile + halo, zero padded.
        for (int e = tid; e < kTC * IH * IW; e += kThreads) {
            const int ci = e / (IH * IW), r = (e / IW) % IH, c = e % IW;
            const int gi = c0 + ci, gy = y0 - HALO + r, gx = x0 - HALO + c;
            float v = 0.f;
            if (gi < a.Cin && gy >= 0 && gy < a.H && gx >= 0 && gx < a.W)
                v = load_f(x, (((size_t)b * a.Cin + gi) * a.H + gy) * a.W + gx) * a.s[(size_t)b * a.Cin + gi];
            xs[ci][r][c] = v;
        }
        if (!UP) {  // W * scale; (ci, t) contiguous in global memory
            for (int e = tid; e < kTC * TO * TAPS; e += kThreads) {
                const int ol = e / (kTC * TAPS), ci = (e / TAPS) % kTC, t = e % TAPS;
                const int go = o0 + ol, gi = c0 + ci;
                ws[ci][ol][0][t] =
                    (go < a.Cout && gi < a.Cin) ? a.weight[((size_t)go * a.Cin + gi) * TAPS + t] * a.scale : 0.f;
            }
        } else {    // 3x3 -> 4 phases x 3x3 (separable: rows then columns)
            for (int e = tid; e < kTC * TO; e += kThreads) {
                const int ol = e / kTC, ci = e % kTC, go = o0 + ol, gi = c0 + ci;
                float w9[9];
#pragma unroll
                for (int t = 0; t < 9; ++t)
                    w9[t] = (go < a.Cout && gi < a.Cin) ? a.weight[((size_t)go * a.Cin + gi) * 9 + t] * a.scale : 0.f;
#pragma unroll
                for (int py = 0; py < 2; ++py)
#pragma unroll
                    for (int ty = 0; ty < 3; ++ty) {
                        float r3[3];
#pragma unroll
                        for (int jx = 0; jx < 3; ++jx)
                            r3[jx] = phase_coef(py, ty, 0) * w9[jx] + phase_coef(py, ty, 1) * w9[3 + jx] +
                                     phase_coef(py, ty, 2) * w9[6 + jx];
#pragma unroll
                        for (int px = 0; px < 2; ++px)
#pragma unroll
                            for (int tx = 0; tx < 3; ++tx)
                                ws[ci][ol][py * 2 + px][ty * 3 + tx] = phase_coef(px, tx, 0) * r3[0] +
                                                                       phase_coef(px, tx, 1) * r3[1] +
                                                                       phase_coef(px, tx, 2) * r3[2];
                    }
            }
        }
        __syncthreads();
#pragma unroll 2
        for (int ci = 0; ci < kTC; ++ci) {
#pragma unroll
            for (int ty = 0; ty < KS; ++ty)
#pragma unroll
                for (int tx = 0; tx < KS; ++tx) {
                    float xv[kPosPerThread];
#pragma unroll
                    for (int m = 0; m < kPosPerThread; ++m) xv[m] = xs[ci][row0 + 2 * m + ty][col + tx];
#pragma unroll
                    for (int j = 0; j < OPW; ++j)
#pragma unroll
                        for (int p = 0; p < PH; ++p) {
                            const float wv = ws[ci][warp + kWarps * j][p][ty * KS + tx];  // warp broadcast
#pragma unroll
                            for (int m = 0; m < kPosPerThread; ++m) acc[j][p][m] = fmaf(wv, xv[m], acc[j][p][m]);
                        }
                }
        }
        __syncthreads();
    }

    T* __restrict__ out = static_cast<T*>(a.out);
#pragma unroll
    for (int j = 0; j < OPW; ++j) {
        const int o = o0 + warp + kWarps * j;
        if (o >= a.Cout) continue;
        const float d = a.demod ? a.demod[(size_t)b * a.Cout + o] : 1.f;
        const float bo = a.bias ? a.bias[o] : 0.f;
        const size_t plane = ((size_t)b * a.Cout + o) * a.Hout * a.Wout;
#pragma unroll
        for (int m = 0; m < kPosPerThread; ++m) {
            const int Y = y0 + row0 + 2 * m, X = x0 + col;
            if (Y >= a.H || X >= a.W) continue;
#pragma unroll
            for (int p = 0; p < PH; ++p) {
                const int oy = UP ? 2 * Y + (p >> 1) : Y, ox = UP ? 2 * X + (p & 1) : X;
                store_f(out, plane + (size_t)oy * a.Wout + ox, epilogue(a, acc[j][p][m], d, bo, oy, ox));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Dynamic shared memory of a launch. One declaration for all instantiations (CUDA requires one type per extern
// __shared__ name); under the CPU emulator (tests/kernels/emu/cuda_emu.h) the emulator's per-block buffer.
#ifdef CUDA_EMU
template <typename T>
__device__ __forceinline__ T* dynamic_smem() { return cuda_emu::dynamic_smem<T>(); }
#else
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
    extern __shared__ __align__(16) unsigned char modconv_dynamic_smem[];
    return reinterpret_cast<T*>(modconv_dynamic_smem);
}
#endif

// Dynamic shared memory a launch may use without cudaFuncSetAttribute(MaxDynamicSharedMemorySize): 48 KiB on every
// architecture. The host picks modconv_1x1_small only when its buffer fits (modconv.cu: use_1x1_small).
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
__host__ __device__ constexpr size_t small1x1_smem_bytes(int co, int cin) {
    return sizeof(float) * (size_t)co * (size_t)cin;
}

// 1x1, Cout <= CO (ToRGB). grid (ceil(H*W/256), B), block (256), dynamic smem small1x1_smem_bytes(CO, Cin).
template <typename T, int CO>
__global__ void __launch_bounds__(256) modconv_1x1_small(const Args a) {
    float* wm = dynamic_smem<float>();                              // [CO, Cin] = W' * s[b]
    const int b = blockIdx.y, hw = a.H * a.W;
    for (int e = threadIdx.x; e < CO * a.Cin; e += blockDim.x) {
        const int o = e / a.Cin, i = e % a.Cin;
        wm[e] = o < a.Cout ? a.weight[(size_t)o * a.Cin + i] * a.scale * a.s[(size_t)b * a.Cin + i] : 0.f;
    }
    __syncthreads();
    const int pix = blockIdx.x * blockDim.x + threadIdx.x;
    if (pix >= hw) return;
    const T* __restrict__ x = static_cast<const T*>(a.x) + (size_t)b * a.Cin * hw + pix;
    float acc[CO];
#pragma unroll
    for (int o = 0; o < CO; ++o) acc[o] = 0.f;
    for (int i = 0; i < a.Cin; ++i) {
        const float xv = load_f(x, (size_t)i * hw);                 // coalesced across the warp
#pragma unroll
        for (int o = 0; o < CO; ++o) acc[o] = fmaf(wm[o * a.Cin + i], xv, acc[o]);
    }
    T* __restrict__ out = static_cast<T*>(a.out);
    const int oy = pix / a.W, ox = pix % a.W;
#pragma unroll
    for (int o = 0; o < CO; ++o) {
        if (o >= a.Cout) break;
        const float d = a.demod ? a.demod[(size_t)b * a.Cout + o] : 1.f;
        const float bo = a.bias ? a.bias[o] : 0.f;
        store_f(out, ((size_t)b * a.Cout + o) * hw + pix, epilogue(a, acc[o], d, bo, oy, ox));
    }
}

}  // namespace modconv
