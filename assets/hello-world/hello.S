/* The program inside ociregistry's built-in hello-world image (serve --hello-world): a static
 * linux/amd64 executable with no libc that prints a greeting and exits 0. Built by build.sh. */
	.globl _start
	.text
_start:
	mov	$1, %eax		/* write(1, message, length) */
	mov	$1, %edi
	lea	message(%rip), %rsi
	mov	$length, %edx
	syscall
	mov	$60, %eax		/* exit(0) */
	xor	%edi, %edi
	syscall

	.section .rodata
message:
	.ascii	"Hello from ociregistry!\n"
	.ascii	"This image was served by ociregistry's built-in hello-world, with no upstream.\n"
	.set	length, . - message
