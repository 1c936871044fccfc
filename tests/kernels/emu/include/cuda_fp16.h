// Stand-in for CUDA's cuda_fp16.h when the kernels are compiled for the CPU emulator (see ../cuda_emu.h).
#pragma once
#include "../cuda_emu.h"
