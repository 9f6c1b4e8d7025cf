"""Cut the face crops of assets/images/faces/ (configs/face-vs-object.toml) from the sample
photos. The boxes are facenet-pytorch's MTCNN detections (PyPI facenet-pytorch 2.6.0, its
shipped P/R/O-Net weights), rounded to whole pixels; run from the repository root:

    python scripts/make_face_crops.py

Needs: torch, torchvision, facenet-pytorch, pillow.
"""
from PIL import Image
from facenet_pytorch import MTCNN

mtcnn = MTCNN(select_largest=True, post_process=False)
for name in ["astronaut.png", "grace_hopper.jpg"]:
    img = Image.open(f"assets/images/{name}").convert("RGB")
    boxes, probs = mtcnn.detect(img)
    box = tuple(int(round(v)) for v in boxes[0])
    print(f"{name}: box (left, upper, right, lower) = {box}, face probability {probs[0]:.4f}")
    img.crop(box).save(f"assets/images/faces/{name.rsplit('.', 1)[0]}_face.png")
