/* Fused StyleGAN2 modulated convolution: C ABI shared by the TensorRT plugins and the ctypes runner.
 *
 * out[b,o,y,x] = act( d[b,o] * sum_{i,taps} W'[o,i,tap] * s[b,i] * x[b,i,..] + noise[y,x] + bias[o] )
 *   W' = weight * 1/sqrt(Cin*k*k)                 weight as stored: [Cout, Cin, k, k], FP32
 *   d  = rsqrt(sum_{i,kh,kw} (W'[o,i,kh,kw]*s[b,i])^2 + 1e-8) in FP32 when demodulate, else 1
 *   act = leaky_relu(., 0.2) * sqrt(2) when activate, else identity
 * upsample (k=3 only): conv_transpose 3x3 stride 2 pad 0, then Blur ([1,3,3,1] x [1,3,3,1] / 16, pad (1,1)): 2H x 2W.
 * See CONTRACT.md next to this file for the ONNX node that maps onto this call.
 *
 * All pointers are device pointers; x/out are FP32 or FP16 (dtype), everything else FP32, NCHW contiguous.
 * Works under CUDA stream capture (no allocation, no synchronisation).
 */
#ifndef RESTYLE_RT_MODCONV_H
#define RESTYLE_RT_MODCONV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MODCONV_ABI_VERSION 1

typedef enum modconv_dtype { MODCONV_FP32 = 0, MODCONV_FP16 = 1 } modconv_dtype_t;

typedef enum modconv_status {
    MODCONV_OK = 0,
    MODCONV_ERR_ARGS = 1,      /* unsupported or inconsistent parameters (see modconv_last_error) */
    MODCONV_ERR_WORKSPACE = 2, /* workspace pointer NULL or smaller than modconv_workspace_size() */
    MODCONV_ERR_CUDA = 3       /* a kernel launch failed (see modconv_last_error) */
} modconv_status_t;

typedef struct modconv_params {
    int32_t batch;        /* B >= 1 (<= 65535)                                          */
    int32_t in_channels;  /* Cin                                                        */
    int32_t out_channels; /* Cout                                                       */
    int32_t height;       /* H of x                                                     */
    int32_t width;        /* W of x                                                     */
    int32_t kernel_size;  /* 1 or 3                                                     */
    int32_t demodulate;   /* 0/1                                                        */
    int32_t upsample;     /* 0/1; 1 needs kernel_size 3; Hout = 2H, Wout = 2W           */
    int32_t activate;     /* 0/1                                                        */
    int32_t noise_numel;  /* 0 (noise unused), 1 (scalar broadcast) or Hout*Wout        */
} modconv_params_t;

/* ABI version of the loaded library (MODCONV_ABI_VERSION it was built with). */
int modconv_abi_version(void);

/* MODCONV_OK when the parameters are supported, else MODCONV_ERR_ARGS (reason in modconv_last_error()). */
int modconv_check(const modconv_params_t* p);

/* Bytes of device workspace modconv_forward needs (B*Cout floats when demodulating, else 0). */
size_t modconv_workspace_size(const modconv_params_t* p);

/* Enqueue the fused layer on `stream` (a cudaStream_t; NULL = legacy default stream).
 * bias may be NULL (no bias); noise may be NULL only when noise_numel == 0. */
int modconv_forward(const modconv_params_t* p, int dtype, const void* x, const float* s, const float* weight,
                    const float* bias, const float* noise, void* out, void* workspace, size_t workspace_bytes,
                    void* stream);

/* Human-readable reason of the last non-OK status on this thread ("" if none). */
const char* modconv_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* RESTYLE_RT_MODCONV_H */
