// Stand-in for CUDA's cuda_runtime.h when modconv.cu is compiled for the CPU emulator (see ../cuda_emu.h).
#pragma once
#include "../cuda_emu.h"
