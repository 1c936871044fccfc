// IPluginV3 "ModulatedConv2d" v1 (TensorRT >= 10.0, TensorRT-RTX). Compiled to nothing on older TensorRT.
// Registered dynamically: the library exports setLoggerFinder + getCreators for IPluginRegistry::loadLibrary and
// nothing registers at load time (modconvPluginFlavour.h says why).
#include "modconvPlugin.h"

#if RESTYLE_MODCONV_PLUGIN_V3

#include <cuda_runtime.h>

#include <new>

namespace restyle_rt {

using namespace nvinfer1;

class ModconvPluginV3 : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    explicit ModconvPluginV3(ModconvAttrs const& attrs) : mAttrs(attrs) { initFields(); }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override { return new (std::nothrow) ModconvPluginV3(mAttrs); }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return kModconvPluginName; }
    char const* getPluginVersion() const noexcept override { return kModconvPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return ""; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                            int32_t nbOutputs) noexcept override {
        return (nbInputs == kModconvNbInputs && nbOutputs == 1) ? 0 : -1;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != kModconvNbInputs) return -1;
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    // out [B, Cout, Hout, Wout] = [x.d0, weight.d0, H*(1+up), W*(1+up)]
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != kModconvNbInputs || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[2].nbDims != 4)
            return -1;
        outputs[0].nbDims = 4;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[0].d[1] = inputs[2].d[0];
        for (int32_t i = 2; i < 4; ++i) {
            outputs[0].d[i] = mAttrs.upsample
                                  ? exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[i],
                                                          *exprBuilder.constant(2))
                                  : inputs[0].d[i];
        }
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != kModconvNbInputs || nbOutputs != 1 || pos < 0 || pos > kModconvNbInputs) return false;
        return modconvSupports(pos, inOut[pos].desc.type, inOut[pos].desc.format, inOut[0].desc.type);
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override {
        if (!mAttrs.demodulate) return 0;
        return sizeof(float) * static_cast<size_t>(inputs[0].max.d[0]) * static_cast<size_t>(inputs[2].max.d[0]);
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override {
        if (nbInputs != kModconvNbInputs || nbOutputs != 1) return -1;
        modconv_params_t p = mAttrs.params(in[0].dims, in[2].dims, in[4].dims);
        return modconv_check(&p) == MODCONV_OK ? 0 : -1;
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

    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFc; }

private:
    void initFields() {
        mFields = modconvFieldNames();
        mFields[0].data = &mAttrs.demodulate;
        mFields[1].data = &mAttrs.upsample;
        mFields[2].data = &mAttrs.activate;
        mFields[3].data = &mAttrs.kernel_size;
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    ModconvAttrs mAttrs;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

class ModconvPluginV3Creator : public IPluginCreatorV3One {
public:
    ModconvPluginV3Creator() {
        mFields = modconvFieldNames();
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kModconvPluginName; }
    char const* getPluginVersion() const noexcept override { return kModconvPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return ""; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFc; }

    // Same fields at build (from the ONNX attributes) and at runtime (from getFieldsToSerialize).
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override {
        ModconvAttrs attrs;
        if (!attrs.parse(fc)) return nullptr;
        return new (std::nothrow) ModconvPluginV3(attrs);
    }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;  // handed over by loadLibrary; the plugin logs nothing yet

}  // namespace restyle_rt

// Entry points of IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and version-compatible engines
// (setPluginsToSerialize). TensorRT requires both.
extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    restyle_rt::gLoggerFinder = finder;
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
    static restyle_rt::ModconvPluginV3Creator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

#endif  // RESTYLE_MODCONV_PLUGIN_V3
