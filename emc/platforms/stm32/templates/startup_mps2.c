/* Minimal Cortex-M startup for emc's test programs on QEMU's mps2-an386 (Cortex-M4): vector table, .data copy,
 * .bss clear, FPU on, then main(); faults end the program through semihosting so QEMU exits. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void) __attribute__((weak));

void SysTick_Handler(void) {}

/* Semihosting SYS_EXIT with "run-time error": QEMU stops with a non-zero status. */
void Fault_Handler(void)
{
    register uint32_t r0 __asm__("r0") = 0x18u;
    register uint32_t r1 __asm__("r1") = 0x20023u;
    __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {}
}

__attribute__((section(".vectors"), used)) void (*const emc_vectors[16])(void) = {
    (void (*)(void))&__StackTop, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, SysTick_Handler,
};

void _init(void) {}
void _fini(void) {}

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__, *dst = &__data_start__;
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;   /* CPACR: enable CP10/CP11 (the FPU) */
    __asm__ volatile("dsb\n\tisb" : : : "memory");
#endif
    exit(main());
}
