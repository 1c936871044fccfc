// Host launchers and the extern "C" API of modconv.h.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>

#include "modconv.h"
#include "modconv_kernels.cuh"

namespace {

thread_local char g_last_error[256] = "";

int fail(int status, const char* msg) {
    std::snprintf(g_last_error, sizeof(g_last_error), "%s", msg);
    return status;
}

int out_hw(const modconv_params_t& p, int* hout, int* wout) {
    *hout = p.upsample ? 2 * p.height : p.height;
    *wout = p.upsample ? 2 * p.width : p.width;
    return 0;
}

template <typename T>
struct identity {
    using type = T;
};

// cudaLaunchKernel with the kernel's own parameter types (the argument array must match them exactly). The CPU
// emulator (tests/kernels/emu/cuda_emu.h) implements the same call, so this launch code is what the emulated tests
// run.
template <typename... P>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   typename identity<P>::type... args) {
    void* argv[] = {const_cast<void*>(static_cast<const void*>(&args))...};
    return cudaLaunchKernel(kernel, grid, block, argv, smem, stream);
}

template <typename T, int KS, bool UP, int TO>
cudaError_t launch_tiled(const modconv::Args& a, cudaStream_t stream) {
    const int tiles = ((a.W + modconv::kTW - 1) / modconv::kTW) * ((a.H + modconv::kTH - 1) / modconv::kTH);
    const dim3 grid(tiles, (a.Cout + TO - 1) / TO, a.B);
    return launch(modconv::modconv_tiled<T, KS, UP, TO>, grid, dim3(modconv::kThreads), 0, stream, a);
}

template <typename T, int CO>
cudaError_t launch_1x1_small_co(const modconv::Args& a, cudaStream_t stream) {
    const dim3 grid((a.H * a.W + 255) / 256, a.B);
    const size_t smem = modconv::small1x1_smem_bytes(CO, a.Cin);
    return launch(modconv::modconv_1x1_small<T, CO>, grid, dim3(256), smem, stream, a);
}

// The small-Cout 1x1 kernel keeps Cout*Cin modulated weights in dynamic shared memory; it is used only while they fit
// the 48 KiB any launch may use without opting in (ToRGB: Cin <= 4096); larger Cin takes the tiled kernel.
bool use_1x1_small(const modconv_params_t& p) {
    return p.kernel_size == 1 && p.out_channels <= 4 &&
           modconv::small1x1_smem_bytes(p.out_channels, p.in_channels) <= modconv::kDefaultDynamicSmem;
}

template <typename T>
cudaError_t launch_conv(const modconv_params_t& p, const modconv::Args& a, cudaStream_t stream) {
    if (use_1x1_small(p)) {
        switch (a.Cout) {
            case 1: return launch_1x1_small_co<T, 1>(a, stream);
            case 2: return launch_1x1_small_co<T, 2>(a, stream);
            case 3: return launch_1x1_small_co<T, 3>(a, stream);
            default: return launch_1x1_small_co<T, 4>(a, stream);
        }
    }
    if (p.kernel_size == 1) return launch_tiled<T, 1, false, 32>(a, stream);
    if (p.upsample) return launch_tiled<T, 3, true, 16>(a, stream);
    return launch_tiled<T, 3, false, 32>(a, stream);
}

}  // namespace

extern "C" {

int modconv_abi_version(void) { return MODCONV_ABI_VERSION; }

const char* modconv_last_error(void) { return g_last_error; }

int modconv_check(const modconv_params_t* p) {
    if (p == nullptr) return fail(MODCONV_ERR_ARGS, "params is NULL");
    if (p->batch < 1 || p->batch > 65535) return fail(MODCONV_ERR_ARGS, "batch must be in [1, 65535]");
    if (p->in_channels < 1 || p->out_channels < 1 || p->height < 1 || p->width < 1)
        return fail(MODCONV_ERR_ARGS, "channels and spatial dims must be >= 1");
    if (p->kernel_size != 1 && p->kernel_size != 3) return fail(MODCONV_ERR_ARGS, "kernel_size must be 1 or 3");
    if (p->upsample && p->kernel_size != 3) return fail(MODCONV_ERR_ARGS, "upsample needs kernel_size 3");
    int ho, wo;
    out_hw(*p, &ho, &wo);
    const long long tiles = (long long)((p->width + modconv::kTW - 1) / modconv::kTW) *
                            ((p->height + modconv::kTH - 1) / modconv::kTH);
    if (tiles > 2147483647LL) return fail(MODCONV_ERR_ARGS, "spatial size too large");
    if (p->noise_numel != 0 && p->noise_numel != 1 && (long long)p->noise_numel != (long long)ho * wo)
        return fail(MODCONV_ERR_ARGS, "noise_numel must be 0, 1 or Hout*Wout");
    g_last_error[0] = '\0';
    return MODCONV_OK;
}

size_t modconv_workspace_size(const modconv_params_t* p) {
    if (p == nullptr || !p->demodulate) return 0;
    return sizeof(float) * (size_t)p->batch * (size_t)p->out_channels;
}

int modconv_forward(const modconv_params_t* p, int dtype, const void* x, const float* s, const float* weight,
                    const float* bias, const float* noise, void* out, void* workspace, size_t workspace_bytes,
                    void* stream_ptr) {
    const int st = modconv_check(p);
    if (st != MODCONV_OK) return st;
    if (dtype != MODCONV_FP32 && dtype != MODCONV_FP16) return fail(MODCONV_ERR_ARGS, "dtype must be FP32 or FP16");
    if (!x || !s || !weight || !out) return fail(MODCONV_ERR_ARGS, "x, s, weight and out must be non-NULL");
    if (p->noise_numel != 0 && noise == nullptr) return fail(MODCONV_ERR_ARGS, "noise is NULL but noise_numel > 0");
    const size_t need = modconv_workspace_size(p);
    if (need > 0 && (workspace == nullptr || workspace_bytes < need))
        return fail(MODCONV_ERR_WORKSPACE, "workspace missing or smaller than modconv_workspace_size()");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

    modconv::Args a{};
    a.x = x;
    a.s = s;
    a.weight = weight;
    a.bias = bias;
    a.noise = p->noise_numel ? noise : nullptr;
    a.noise_full = p->noise_numel > 1;
    a.demod = p->demodulate ? static_cast<const float*>(workspace) : nullptr;
    a.out = out;
    a.B = p->batch;
    a.Cin = p->in_channels;
    a.Cout = p->out_channels;
    a.H = p->height;
    a.W = p->width;
    out_hw(*p, &a.Hout, &a.Wout);
    a.activate = p->activate;
    const int taps = p->kernel_size * p->kernel_size;
    a.scale = 1.0f / std::sqrt((float)p->in_channels * (float)taps);

    cudaError_t err = cudaSuccess;
    if (p->demodulate) {
        err = launch(modconv::demod_kernel, dim3((p->out_channels + 3) / 4), dim3(32, 4), 0, stream, weight, s,
                     static_cast<float*>(workspace), p->batch, p->in_channels, p->out_channels, taps,
                     a.scale * a.scale);
    }
    if (err == cudaSuccess)
        err = dtype == MODCONV_FP16 ? launch_conv<__half>(*p, a, stream) : launch_conv<float>(*p, a, stream);
    if (err != cudaSuccess) {
        std::snprintf(g_last_error, sizeof(g_last_error), "CUDA launch failed: %s", cudaGetErrorString(err));
        return MODCONV_ERR_CUDA;
    }
    return MODCONV_OK;
}

}  // extern "C"
