// Driver of the CPU-emulated kernels (tests/kernels/emu/emulate.py builds it with g++ and the sanitizers).
//
//   modconv_emu CASE_DIR...   run each case through the C ABI of modconv.h, exactly as the CUDA runner does:
//                             CASE_DIR/case.txt = "batch cin cout h w k demod up act noise_numel dtype has_bias",
//                             inputs x.bin s.bin w.bin [b.bin] [n.bin] (raw, C order), output out.bin.
//                             Output and workspace start as NaN so an element the kernels never write shows up.
//   modconv_emu --selftest    checks of the emulator itself (barriers, shuffles, shared-memory limits).
// Exit status: 0 ok, 2 the library returned an error (printed), 1 bad usage or I/O.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "modconv.h"  // restyle_rt/kernels/modulated_conv (on the -I path)
#include "cuda_emu.h"

namespace {

bool read_file(const std::string& path, std::vector<unsigned char>& buf, size_t bytes) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return false;
    buf.resize(bytes);
    const size_t got = std::fread(buf.data(), 1, bytes, f);
    const bool at_end = std::fgetc(f) == EOF;
    std::fclose(f);
    return got == bytes && at_end;
}

int run_case(const std::string& dir) {
    modconv_params_t p{};
    int dtype = 0, has_bias = 0;
    FILE* f = std::fopen((dir + "/case.txt").c_str(), "r");
    if (f == nullptr) return std::fprintf(stderr, "%s/case.txt missing\n", dir.c_str()), 1;
    const int n = std::fscanf(f, "%d %d %d %d %d %d %d %d %d %d %d %d", &p.batch, &p.in_channels, &p.out_channels,
                              &p.height, &p.width, &p.kernel_size, &p.demodulate, &p.upsample, &p.activate,
                              &p.noise_numel, &dtype, &has_bias);
    std::fclose(f);
    if (n != 12) return std::fprintf(stderr, "%s/case.txt: expected 12 ints\n", dir.c_str()), 1;
    const size_t es = dtype == MODCONV_FP16 ? 2 : 4, k2 = (size_t)p.kernel_size * p.kernel_size;
    const size_t hw = (size_t)p.height * p.width, ohw = hw * (p.upsample ? 4 : 1);
    std::vector<unsigned char> x, s, w, b, nz;
    bool ok = read_file(dir + "/x.bin", x, es * p.batch * p.in_channels * hw) &&
              read_file(dir + "/s.bin", s, 4 * (size_t)p.batch * p.in_channels) &&
              read_file(dir + "/w.bin", w, 4 * (size_t)p.out_channels * p.in_channels * k2);
    if (ok && has_bias) ok = read_file(dir + "/b.bin", b, 4 * (size_t)p.out_channels);
    if (ok && p.noise_numel) ok = read_file(dir + "/n.bin", nz, 4 * (size_t)p.noise_numel);
    if (!ok) return std::fprintf(stderr, "%s: an input file is missing or has the wrong size\n", dir.c_str()), 1;

    std::vector<unsigned char> out(es * p.batch * p.out_channels * ohw, 0xff);  // NaN in FP32 and FP16
    const size_t ws_bytes = modconv_workspace_size(&p);
    std::vector<unsigned char> ws(ws_bytes, 0xff);
    const int st = modconv_forward(&p, dtype, x.data(), reinterpret_cast<const float*>(s.data()),
                                   reinterpret_cast<const float*>(w.data()),
                                   has_bias ? reinterpret_cast<const float*>(b.data()) : nullptr,
                                   p.noise_numel ? reinterpret_cast<const float*>(nz.data()) : nullptr, out.data(),
                                   ws_bytes ? ws.data() : nullptr, ws_bytes, nullptr);
    if (st != MODCONV_OK) return std::fprintf(stderr, "modconv_forward -> %d: %s\n", st, modconv_last_error()), 2;
    FILE* o = std::fopen((dir + "/out.bin").c_str(), "wb");
    if (o == nullptr || std::fwrite(out.data(), 1, out.size(), o) != out.size()) return 1;
    std::fclose(o);
    return 0;
}

// --- self-test kernels: the emulator's barrier, shuffle and shared-memory-limit semantics ----------------------
__global__ void block_reverse(const int* in, int* out) {  // needs a real barrier between the write and the read
    __shared__ int buf[256];
    const int t = threadIdx.x;
    buf[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}

__global__ void warp_sum(float* out) {
    float v = (float)threadIdx.x;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    out[threadIdx.x] = v;
}

__global__ void dyn_fill(int n) {
    float* d = cuda_emu::dynamic_smem<float>();
    for (int i = threadIdx.x; i < n; i += blockDim.x) d[i] = 1.f;
}

int selftest() {
    int fails = 0;
    auto expect = [&](bool c, const char* what) {
        std::printf("%s: %s\n", c ? "ok" : "FAIL", what);
        fails += !c;
    };
    std::vector<int> in(512), out(512, -1);
    for (int i = 0; i < 512; ++i) in[i] = i;
    const int* pin = in.data();
    int* pout = out.data();
    void* a1[] = {&pin, &pout};
    expect(cudaLaunchKernel(block_reverse, dim3(2), dim3(256), a1, 0, nullptr) == cudaSuccess, "launch");
    bool rev = true;
    for (int i = 0; i < 512; ++i) rev &= out[i] == (i / 256) * 256 + 255 - i % 256;
    expect(rev, "__syncthreads orders shared-memory writes before reads");

    std::vector<float> sums(64, -1.f);
    float* ps = sums.data();
    void* a2[] = {&ps};
    cudaLaunchKernel(warp_sum, dim3(1), dim3(64), a2, 0, nullptr);
    expect(sums[0] == 496.f && sums[31] == 496.f && sums[32] == 1520.f, "__shfl_xor_sync butterfly sums each warp");

    int n = 48 * 1024 / 4;
    void* a3[] = {&n};
    expect(cudaLaunchKernel(dyn_fill, dim3(1), dim3(32), a3, 48 * 1024, nullptr) == cudaSuccess, "48 KiB dynamic smem");
    n += 1;
    expect(cudaLaunchKernel(dyn_fill, dim3(1), dim3(32), a3, 48 * 1024 + 4, nullptr) == cudaErrorInvalidValue,
           "48 KiB + 4 B refused without opt-in");
    expect(cudaFuncSetAttribute(dyn_fill, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess,
           "opt-in to 64 KiB");
    expect(cudaLaunchKernel(dyn_fill, dim3(1), dim3(32), a3, 48 * 1024 + 4, nullptr) == cudaSuccess,
           "48 KiB + 4 B after opt-in");
    expect(cudaFuncSetAttribute(dyn_fill, cudaFuncAttributeMaxDynamicSharedMemorySize, 1 << 20) ==
               cudaErrorInvalidValue,
           "opt-in above the device maximum refused");
    expect(cudaLaunchKernel(dyn_fill, dim3(1), dim3(2048), a3, 0, nullptr) == cudaErrorInvalidConfiguration,
           "2048 threads per block refused");
    return fails ? 2 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return std::fprintf(stderr, "usage: %s CASE_DIR... | --selftest\n", argv[0]), 1;
    if (!std::strcmp(argv[1], "--selftest")) return selftest();
    for (int i = 1; i < argc; ++i) {
        const int rc = run_case(argv[i]);
        if (rc != 0) return rc;
    }
    return 0;
}
