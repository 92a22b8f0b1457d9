/* torch's CPU dropout masks, drawn fast and bit for bit.
 *
 * On a CPU without MKL's Bernoulli path (AMD, Arm), ``Tensor.bernoulli_(p)`` draws one element
 * at a time from torch's Mersenne Twister (MT19937): two 32-bit words, the first the high
 * half of a 64-bit value; its low 53 bits as a double in [0, 1); the element is 1 when that
 * is below p. That loop costs ~6 ns an element, on one thread. This draws the same words from
 * the same generator state and makes the same comparison, in blocks of 624 words that the
 * compiler vectorises: the same mask, ~10x faster. bertui.core.mt19937 moves the generator
 * state in and out (through torch.get_rng_state / set_rng_state) and checks, before first use,
 * that the result equals torch's own.
 *
 * Built by setup.py as an optional extension (no Python API: loaded with ctypes).
 */
#include <stdint.h>

#define MT_N 624
#define MT_M 397
#define MATRIX_A 0x9908b0dfU
#define UPPER_MASK 0x80000000U
#define LOWER_MASK 0x7fffffffU

/* One build for every x86-64 CPU: the compiler makes an AVX-512, an AVX2 and a baseline copy
 * and the loader picks one (an ifunc, so glibc only). The AVX-512 copy is ~9x faster than the
 * baseline one, which barely beats torch's loop. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) \
    && __GNUC__ >= 11
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#elif defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MULTIVERSION
#define MULTIVERSION
#endif

/* The state's next 624 words (the reference MT19937 recurrence). */
static inline void twist(uint32_t *mt) {
    int k;
    for (k = 0; k < MT_N - MT_M; k++) {
        uint32_t y = (mt[k] & UPPER_MASK) | (mt[k + 1] & LOWER_MASK);
        mt[k] = mt[k + MT_M] ^ (y >> 1) ^ ((0U - (y & 1U)) & MATRIX_A);
    }
    for (; k < MT_N - 1; k++) {
        uint32_t y = (mt[k] & UPPER_MASK) | (mt[k + 1] & LOWER_MASK);
        mt[k] = mt[k + (MT_M - MT_N)] ^ (y >> 1) ^ ((0U - (y & 1U)) & MATRIX_A);
    }
    uint32_t y = (mt[MT_N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ ((0U - (y & 1U)) & MATRIX_A);
}

static inline uint32_t temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= y >> 18;
    return y;
}

static inline uint64_t draw53(uint32_t high, uint32_t low) {
    return ((uint64_t)(high & 0x1FFFFFU) << 32) | low;
}

/* Fill ``out`` (n elements of ``width`` bytes: 2 for bfloat16/float16, 4 for float32, 8 for
 * float64) with ``one`` where the element's 53-bit draw is below ``threshold`` (ceil(p * 2^53))
 * and with 0 elsewhere. ``state`` is the generator's 624 words, ``*pos`` the index of the next
 * word to use (624: twist first); both are advanced past the words used (2 an element). */
MULTIVERSION
void bertui_bernoulli(uint32_t *state, int32_t *pos, void *out, int64_t n, int32_t width,
                      uint64_t threshold, uint64_t one) {
    uint32_t words[MT_N];
    int64_t i = 0;
    int32_t p = *pos;
    uint32_t high = 0;
    int have_high = 0; /* an element's first word, drawn at the end of the previous block */
    while (i < n) {
        if (p >= MT_N) {
            twist(state);
            p = 0;
        }
        int32_t avail = MT_N - p;
        for (int32_t k = 0; k < avail; k++) words[k] = temper(state[p + k]);
        int32_t k = 0;
        if (have_high) {
            uint64_t v = draw53(high, words[0]) < threshold ? one : 0;
            switch (width) {
                case 2: ((uint16_t *)out)[i] = (uint16_t)v; break;
                case 4: ((uint32_t *)out)[i] = (uint32_t)v; break;
                default: ((uint64_t *)out)[i] = v; break;
            }
            i++;
            k = 1;
            have_high = 0;
        }
        int64_t pairs = (avail - k) / 2;
        if (pairs > n - i) pairs = n - i;
        const uint32_t *w = words + k;
        if (width == 2) {
            uint16_t *o = (uint16_t *)out + i;
            uint16_t one16 = (uint16_t)one;
            for (int64_t j = 0; j < pairs; j++)
                o[j] = draw53(w[2 * j], w[2 * j + 1]) < threshold ? one16 : 0;
        } else if (width == 4) {
            uint32_t *o = (uint32_t *)out + i;
            uint32_t one32 = (uint32_t)one;
            for (int64_t j = 0; j < pairs; j++)
                o[j] = draw53(w[2 * j], w[2 * j + 1]) < threshold ? one32 : 0;
        } else {
            uint64_t *o = (uint64_t *)out + i;
            for (int64_t j = 0; j < pairs; j++)
                o[j] = draw53(w[2 * j], w[2 * j + 1]) < threshold ? one : 0;
        }
        i += pairs;
        k += (int32_t)(2 * pairs);
        if (i < n && k == avail - 1) { /* one word left in this block: the next element's high */
            high = words[k];
            have_high = 1;
            k++;
        }
        p += k;
    }
    *pos = p;
}
