// Shared pieces of the "ModulatedConv2d" TensorRT plugins (IPluginV3 for TensorRT >= 10 and TensorRT-RTX,
// IPluginV2DynamicExt for TensorRT 8.5/8.6 on JetPack 5/6.0; the choice: modconvPluginFlavour.h).
// Node contract: CONTRACT.md. Kernels: modconv.h (no TensorRT types there).
#pragma once

#include <NvInfer.h>
#include <NvInferVersion.h>

#include "modconvPluginFlavour.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "modconv.h"

namespace restyle_rt {

constexpr char const* kModconvPluginName = "ModulatedConv2d";
constexpr char const* kModconvPluginVersion = "1";
constexpr int32_t kModconvNbInputs = 5;  // x, s, weight, bias, noise

// The four int attributes of the ONNX node, in serialization order.
struct ModconvAttrs {
    int32_t demodulate = 1;
    int32_t upsample = 0;
    int32_t activate = 1;
    int32_t kernel_size = 3;

    // Reads the known int fields; ignores others (plugin_version / plugin_namespace). False on a bad value.
    bool parse(nvinfer1::PluginFieldCollection const* fc) {
        if (fc == nullptr) return true;
        for (int32_t i = 0; i < fc->nbFields; ++i) {
            nvinfer1::PluginField const& f = fc->fields[i];
            int32_t* dst = field(f.name);
            if (dst == nullptr) continue;
            if (f.type != nvinfer1::PluginFieldType::kINT32 || f.length < 1 || f.data == nullptr) return false;
            *dst = *static_cast<int32_t const*>(f.data);
        }
        return valid();
    }

    bool valid() const {
        return (kernel_size == 1 || kernel_size == 3) && (!upsample || kernel_size == 3) &&
               (demodulate == 0 || demodulate == 1) && (upsample == 0 || upsample == 1) &&
               (activate == 0 || activate == 1);
    }

    int32_t* field(char const* name) {
        if (name == nullptr) return nullptr;
        if (!std::strcmp(name, "demodulate")) return &demodulate;
        if (!std::strcmp(name, "upsample")) return &upsample;
        if (!std::strcmp(name, "activate")) return &activate;
        if (!std::strcmp(name, "kernel_size")) return &kernel_size;
        return nullptr;
    }

    // Kernel parameters from the runtime dims of x [B,Cin,H,W], weight [Cout,Cin,k,k] and noise [1,1,h,w].
    modconv_params_t params(nvinfer1::Dims const& x, nvinfer1::Dims const& w, nvinfer1::Dims const& noise) const {
        modconv_params_t p{};
        p.batch = static_cast<int32_t>(x.d[0]);
        p.in_channels = static_cast<int32_t>(x.d[1]);
        p.height = static_cast<int32_t>(x.d[2]);
        p.width = static_cast<int32_t>(x.d[3]);
        p.out_channels = static_cast<int32_t>(w.d[0]);
        p.kernel_size = kernel_size;
        p.demodulate = demodulate;
        p.upsample = upsample;
        p.activate = activate;
        int64_t n = 1;
        for (int32_t i = 0; i < noise.nbDims; ++i) n *= noise.d[i];
        p.noise_numel = static_cast<int32_t>(n);
        return p;
    }
};

// PluginField descriptions (creator getFieldNames and V3 getFieldsToSerialize).
inline std::vector<nvinfer1::PluginField> modconvFieldNames() {
    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    return {PluginField("demodulate", nullptr, PluginFieldType::kINT32, 1),
            PluginField("upsample", nullptr, PluginFieldType::kINT32, 1),
            PluginField("activate", nullptr, PluginFieldType::kINT32, 1),
            PluginField("kernel_size", nullptr, PluginFieldType::kINT32, 1)};
}

// x/out: FP32 or FP16 linear, same type; s/weight/bias/noise: FP32 linear.
inline bool modconvSupports(int32_t pos, nvinfer1::DataType type, nvinfer1::TensorFormat format,
                            nvinfer1::DataType xType) {
    using nvinfer1::DataType;
    if (format != nvinfer1::TensorFormat::kLINEAR) return false;
    if (pos == 0) return type == DataType::kFLOAT || type == DataType::kHALF;
    if (pos == kModconvNbInputs) return type == xType;
    return type == DataType::kFLOAT;
}

inline int modconvDtype(nvinfer1::DataType t) {
    return t == nvinfer1::DataType::kHALF ? MODCONV_FP16 : MODCONV_FP32;
}

}  // namespace restyle_rt
