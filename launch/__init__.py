"""distnet-launch: start a distnet training script on N workers (local cores, hosts, hostfile or cluster.yaml),
over MPI (mpirun) or Ray, with BLAS threads per worker set, rank-prefixed output, a failure summary, restarts and
elastic relaunches on the healthy hosts (launch/elastic.py).

    distnet-launch -n 8 examples/train_cnn.py --epochs 5
    distnet-launch --hosts a:4,b:4 train.py
    distnet-launch --hostfile hosts.txt train.py
    distnet-launch --cluster cluster.yaml train.py
    distnet-launch --dry-run -n 4 train.py        # print the exact command
    distnet-launch --hostfile hosts.txt --max-restarts 3 --min-workers 4 train.py

The launcher starts processes (each rank under a supervisor, launch/supervise.py); it never imports distnet's
engine.
"""
