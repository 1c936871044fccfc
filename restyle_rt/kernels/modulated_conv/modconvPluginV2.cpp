// IPluginV2DynamicExt "ModulatedConv2d" v1 for TensorRT 8.5 / 8.6 (JetPack 5.1.x, JetPack 6.0), which have no IPluginV3.
// On TensorRT >= 10 and TensorRT-RTX the IPluginV3 version (modconvPluginV3.cpp) is built instead, same name/version.
// Registered statically when the library is dlopen'ed (modconvPluginFlavour.h says why).
#include "modconvPlugin.h"

#if !RESTYLE_MODCONV_PLUGIN_V3

#include <cuda_runtime.h>

#include <new>

namespace restyle_rt {

using namespace nvinfer1;

class ModconvPluginV2 : public IPluginV2DynamicExt {
public:
    explicit ModconvPluginV2(ModconvAttrs const& attrs) : mAttrs(attrs) {}

    ModconvPluginV2(void const* data, size_t length) {
        int32_t v[4] = {mAttrs.demodulate, mAttrs.upsample, mAttrs.activate, mAttrs.kernel_size};
        if (length == sizeof(v)) std::memcpy(v, data, sizeof(v));
        mAttrs.demodulate = v[0];
        mAttrs.upsample = v[1];
        mAttrs.activate = v[2];
        mAttrs.kernel_size = v[3];
    }

    // IPluginV2DynamicExt
    IPluginV2DynamicExt* clone() const noexcept override {
        auto* p = new (std::nothrow) ModconvPluginV2(mAttrs);
        if (p != nullptr) p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    DimsExprs getOutputDimensions(int32_t outputIndex, DimsExprs const* inputs, int32_t nbInputs,
                                  IExprBuilder& exprBuilder) noexcept override {
        DimsExprs out;
        out.nbDims = 4;
        out.d[0] = inputs[0].d[0];
        out.d[1] = inputs[2].d[0];
        for (int32_t i = 2; i < 4; ++i) {
            out.d[i] = mAttrs.upsample ? exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[i],
                                                               *exprBuilder.constant(2))
                                       : inputs[0].d[i];
        }
        return out;
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != kModconvNbInputs || nbOutputs != 1 || pos < 0 || pos > kModconvNbInputs) return false;
        return modconvSupports(pos, inOut[pos].type, inOut[pos].format, inOut[0].type);
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                         int32_t nbOutputs) noexcept override {}

    size_t getWorkspaceSize(PluginTensorDesc const* inputs, int32_t nbInputs, PluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override {
        modconv_params_t p = mAttrs.params(inputs[0].dims, inputs[2].dims, inputs[4].dims);
        return modconv_workspace_size(&p);
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        modconv_params_t p = mAttrs.params(inputDesc[0].dims, inputDesc[2].dims, inputDesc[4].dims);
        int const st = modconv_forward(&p, modconvDtype(inputDesc[0].type), inputs[0],
                                       static_cast<float const*>(inputs[1]), static_cast<float const*>(inputs[2]),
                                       static_cast<float const*>(inputs[3]), static_cast<float const*>(inputs[4]),
                                       outputs[0], workspace, modconv_workspace_size(&p), stream);
        return st == MODCONV_OK ? 0 : -1;
    }

    // IPluginV2Ext
    DataType getOutputDataType(int32_t index, DataType const* inputTypes, int32_t nbInputs) const noexcept override {
        return inputTypes[0];
    }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kModconvPluginName; }
    char const* getPluginVersion() const noexcept override { return kModconvPluginVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    size_t getSerializationSize() const noexcept override { return 4 * sizeof(int32_t); }
    void serialize(void* buffer) const noexcept override {
        int32_t const v[4] = {mAttrs.demodulate, mAttrs.upsample, mAttrs.activate, mAttrs.kernel_size};
        std::memcpy(buffer, v, sizeof(v));
    }
    void destroy() noexcept override { delete this; }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    ModconvAttrs mAttrs;
    std::string mNamespace;
};

class ModconvPluginV2Creator : public IPluginCreator {
public:
    ModconvPluginV2Creator() {
        mFields = modconvFieldNames();
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kModconvPluginName; }
    char const* getPluginVersion() const noexcept override { return kModconvPluginVersion; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFc; }

    IPluginV2* createPlugin(char const* name, PluginFieldCollection const* fc) noexcept override {
        ModconvAttrs attrs;
        if (!attrs.parse(fc)) return nullptr;
        auto* p = new (std::nothrow) ModconvPluginV2(attrs);
        if (p != nullptr) p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    IPluginV2* deserializePlugin(char const* name, void const* serialData, size_t serialLength) noexcept override {
        auto* p = new (std::nothrow) ModconvPluginV2(serialData, serialLength);
        if (p != nullptr) p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
    std::string mNamespace;
};

// Static registration at dlopen (the only mechanism of this flavour). The macro pastes its argument into a variable
// name: unqualified class name, inside the namespace.
REGISTER_TENSORRT_PLUGIN(ModconvPluginV2Creator);

}  // namespace restyle_rt

#endif  // !RESTYLE_MODCONV_PLUGIN_V3
