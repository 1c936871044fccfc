// Which "ModulatedConv2d" plugin a build compiles and how its library registers it. Needs only NvInferVersion.h, so
// tests/kernels/test_plugin_build.py checks the choice against each flavour's version macros without TensorRT.
#pragma once

#include <NvInferVersion.h>

// TensorRT-RTX headers define TRT_MAJOR_RTX and set NV_TENSORRT_MAJOR to the RTX major (1), so the version number
// alone would compile the V2 plugin there; RTX has IPluginV3 from 1.0 on.
#if defined(TRT_MAJOR_RTX)
#define RESTYLE_MODCONV_TENSORRT_RTX 1
#else
#define RESTYLE_MODCONV_TENSORRT_RTX 0
#endif

#if RESTYLE_MODCONV_TENSORRT_RTX || NV_TENSORRT_MAJOR >= 10
// TensorRT >= 10 and TensorRT-RTX: IPluginV3 + IPluginCreatorV3One, registered dynamically. The library exports
// setLoggerFinder and getCreators, the entry points of IPluginRegistry::loadLibrary (Python:
// trt.get_plugin_registry().load_library(path)), trtexec --dynamicPlugins and IBuilderConfig::setPluginsToSerialize.
// Nothing registers at load time: loadLibrary dlopens the library and then registers what getCreators returns, so a
// creator a static initialiser had registered would be registered twice and loadLibrary would fail.
#define RESTYLE_MODCONV_PLUGIN_V3 1
#else
// TensorRT 8.5 / 8.6 (JetPack 5.1, 6.0): IPluginV2DynamicExt, registered statically (REGISTER_TENSORRT_PLUGIN) when
// the library is dlopen'ed: ctypes.CDLL, Polygraphy --plugins, trtexec --plugins, ONNX Runtime's
// trt_extra_plugin_lib_paths. 8.5 has no loadLibrary; the library exports no loadLibrary entry points.
#define RESTYLE_MODCONV_PLUGIN_V3 0
#endif
