//! A few lanes of f32 as one value, so that the Winograd transforms and their epilogue are written
//! once and compiled per instruction set: AVX-512 (16 lanes) or AVX2 and FMA (8) where the CPU has
//! it, NEON (4) on aarch64, and one lane anywhere (what a channel count's remainder and a CPU without AVX2 use).
//!
//! Every method is `unsafe`: the pointers must have `N` readable (or writable) elements, and the
//! SIMD implementations must only run where the CPU has their instruction set (the callers
//! dispatch once per tile).

pub trait Lanes: Copy {
    const N: usize;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    /// `c` in every lane.
    unsafe fn splat(c: f32) -> Self;
    /// `self * k + acc`, fused where the instruction set has it.
    unsafe fn mul_add(self, k: Self, acc: Self) -> Self;
    /// `max(self, 0)`.
    unsafe fn relu(self) -> Self;
    /// `self * keep` for `N` mask bytes that are 0 or 1.
    unsafe fn keep(self, keep: *const u8) -> Self;
}

impl Lanes for f32 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    unsafe fn splat(c: f32) -> Self {
        c
    }
    // Not `f32::mul_add`: without a hardware FMA in the target's baseline it is a libm call.
    #[inline(always)]
    unsafe fn mul_add(self, k: Self, acc: Self) -> Self {
        self * k + acc
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        self.max(0.0)
    }
    #[inline(always)]
    unsafe fn keep(self, keep: *const u8) -> Self {
        self * f32::from(*keep)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 8 lanes; only inside functions compiled with `avx2` (they inline these).
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Lanes for Avx2 {
        const N: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn add(self, o: Self) -> Self {
            Avx2(_mm256_add_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn sub(self, o: Self) -> Self {
            Avx2(_mm256_sub_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn splat(c: f32) -> Self {
            Avx2(_mm256_set1_ps(c))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul_add(self, k: Self, acc: Self) -> Self {
            Avx2(_mm256_fmadd_ps(self.0, k.0, acc.0))
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn relu(self) -> Self {
            Avx2(_mm256_max_ps(self.0, _mm256_setzero_ps()))
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn keep(self, keep: *const u8) -> Self {
            let bytes = _mm_loadl_epi64(keep as *const __m128i);
            Avx2(_mm256_mul_ps(self.0, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes))))
        }
    }

    /// 16 lanes; only inside functions compiled with `avx512f` (they inline these).
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes for Avx512 {
        const N: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(self, o: Self) -> Self {
            Avx512(_mm512_add_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn sub(self, o: Self) -> Self {
            Avx512(_mm512_sub_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(c: f32) -> Self {
            Avx512(_mm512_set1_ps(c))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul_add(self, k: Self, acc: Self) -> Self {
            Avx512(_mm512_fmadd_ps(self.0, k.0, acc.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn relu(self) -> Self {
            Avx512(_mm512_max_ps(self.0, _mm512_setzero_ps()))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn keep(self, keep: *const u8) -> Self {
            let bytes = _mm_loadu_si128(keep as *const __m128i);
            Avx512(_mm512_mul_ps(self.0, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes))))
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Lanes;
    use std::arch::aarch64::*;

    /// 4 lanes (every AArch64 CPU has NEON).
    #[derive(Clone, Copy)]
    pub struct Neon(float32x4_t);

    impl Lanes for Neon {
        const N: usize = 4;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon(vld1q_f32(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            vst1q_f32(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            Neon(vaddq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            Neon(vsubq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn splat(c: f32) -> Self {
            Neon(vdupq_n_f32(c))
        }
        #[inline(always)]
        unsafe fn mul_add(self, k: Self, acc: Self) -> Self {
            Neon(vfmaq_f32(acc.0, self.0, k.0))
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            Neon(vmaxq_f32(self.0, vdupq_n_f32(0.0)))
        }
        #[inline(always)]
        unsafe fn keep(self, keep: *const u8) -> Self {
            let k = [*keep, *keep.add(1), *keep.add(2), *keep.add(3)].map(f32::from);
            Neon(vmulq_f32(self.0, vld1q_f32(k.as_ptr())))
        }
    }
}
