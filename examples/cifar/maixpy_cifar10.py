# MaixPy script for the K210 board (not for the PC): classify the camera image with the CIFAR-10 kmodel
# that cifar10_to_kmodel.py wrote. Copy the kmodel to the SD card as /sd/cifar10.kmodel, or flash it with
# kflash at 0x300000 and set MODEL = 0x300000. Then run this file with MaixPy IDE or copy it as /sd/main.py.
#
# What the kmodel expects and returns:
# - input: a 32x32 RGB image of raw pixels; emc folded the img_0_1 scaling (pixel / 255) into the first
#   convolution, so the camera image goes in as it is;
# - output: float values (emc dequantizes the outputs by default), in the kmodel's CHW order -- channel by
#   channel, then row by row. For this classifier that is simply the 10 class scores (logits; convert with
#   --softmax for probabilities). A model whose output is a feature map needs index c * H * W + y * W + x.
import sensor
import lcd
import KPU as kpu

MODEL = "/sd/cifar10.kmodel"
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
INPUT_SIZE = 32


def output_values(fmap):
    """The output as a list of floats: fmap.to_float_list() where the firmware has it, else fmap[:]."""
    try:
        return fmap.to_float_list()
    except AttributeError:
        return fmap[:]


def top1(values):
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


lcd.init()
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
sensor.set_windowing((224, 224))        # a square crop of the centre, resized to 32x32 below
sensor.run(1)

task = kpu.load(MODEL)
try:
    while True:
        img = sensor.snapshot()
        small = img.resize(INPUT_SIZE, INPUT_SIZE)
        small.pix_to_ai()               # refresh the planar RGB888 copy the KPU reads
        fmap = kpu.forward(task, small)
        values = output_values(fmap)
        best = top1(values)
        text = "%s %.2f" % (LABELS[best], values[best])
        img.draw_string(4, 4, text, color=(255, 0, 0), scale=2)
        lcd.display(img)
        print(text)
finally:
    kpu.deinit(task)
