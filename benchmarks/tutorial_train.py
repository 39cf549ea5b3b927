"""The loop a PyTorch tutorial teaches, as the baseline `train_throughput.py` times.

torchvision's MNIST with `ToTensor`, `DataLoader(shuffle=True, batch_size=128)`,
`.item()` every step; one epoch of training and a test pass, with the same conv
autoencoder as `aerun train model=cnn_ae` (Conv 1->16->32, 3x3 stride 2, a 7x7 conv
to a 64-d code, mirrored with ConvTranspose; sigmoid output, MSE, Adam 1e-3).
Only torch and torchvision: no aerun import, as a user would write it.

    python benchmarks/tutorial_train.py --root <folder holding MNIST/raw> --epochs 1

torchvision's MNIST class needs the uncompressed IDX files in `<root>/MNIST/raw`
(what its download leaves); `train_throughput.py` prepares such a folder.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def cnn_ae() -> nn.Module:
    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),  # 28 -> 14
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # 14 -> 7
        nn.Conv2d(32, 64, 7), nn.Flatten(),  # [B, 32, 7, 7] -> [B, 64]
    )
    decoder = nn.Sequential(
        nn.Unflatten(1, (64, 1, 1)), nn.ConvTranspose2d(64, 32, 7), nn.ReLU(),  # -> 7x7
        nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # -> 14x14
        nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid(),  # -> 28x28
    )
    return nn.Sequential(encoder, decoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transforms.ToTensor()
    train_set = datasets.MNIST(args.root, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(args.root, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=args.batch_size, shuffle=False)

    model = cnn_ae().to(device)
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        running_loss = 0.0
        for images, _ in train_loader:
            images = images.to(device)
            loss = criterion(model(images), images)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        print(f"epoch {epoch + 1}: train mse {running_loss / len(train_loader):.5f}")

    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for images, _ in test_loader:
            images = images.to(device)
            test_loss += criterion(model(images), images).item() * images.size(0)
    print(f"test mse {test_loss / len(test_set):.5f} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
